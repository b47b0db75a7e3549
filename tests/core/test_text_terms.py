"""Sparse term vectors: what a search for a word form finds, and that ids survive a restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.text_terms import (
    BM25_K1,
    TITLE_WEIGHT,
    detect_language,
    document_sparse,
    query_sparse,
    term_id,
    terms,
)

ROOT = Path(__file__).resolve().parents[2]


def weights(sparse: tuple[list[int], list[float]]) -> dict[int, float]:
    indices, values = sparse
    return dict(zip(indices, values, strict=True))


def test_stemming_joins_english_word_forms() -> None:
    assert terms("running") == terms("runs") == terms("run")
    assert set(query_sparse("running")[0]) == set(document_sparse("She runs daily.")[0]) & set(
        query_sparse("running")[0]
    )


def test_stemming_joins_russian_word_forms() -> None:
    assert detect_language("Новые книги о погоде") == "ru"
    assert query_sparse("книги")[0] == query_sparse("книга")[0]
    assert query_sparse("книги")[0][0] in document_sparse("Эта книга лежит на столе.")[0]


def test_english_words_inside_russian_text_are_stemmed_as_english() -> None:
    assert terms("Документация по running containers") == terms("документации") + terms("run container")


def test_stop_words_are_dropped() -> None:
    assert terms("the cat is on the mat") == ["cat", "mat"]
    assert terms("кошка и собака") == terms("кошка") + terms("собака")
    assert query_sparse("the of and") == ([], [])


def test_case_and_unicode_forms_give_one_term() -> None:
    assert terms("CAFÉ") == terms("café") == terms("cafe\u0301")
    assert terms("Ёлка") == terms("елка")


def test_language_detection() -> None:
    assert detect_language("The quick brown fox jumps over the lazy dog") == "en"
    assert detect_language("Съешь ещё этих мягких французских булок") == "ru"
    assert detect_language("Der Hund ist nicht mit der Katze gekommen") == "de"
    assert detect_language("Її книжка лежить на столі") == "uk"
    assert detect_language("12345 !!!") == "en"


def test_ids_are_the_same_in_another_process() -> None:
    here = {"doc": document_sparse("Running books, книги и книга", title="Title"), "id": term_id("run")}
    code = (
        "import json; from core.text_terms import document_sparse, term_id; "
        "print(json.dumps({'doc': document_sparse('Running books, книги и книга', title='Title'),"
        " 'id': term_id('run')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    there = json.loads(out.stdout)
    assert there["id"] == here["id"]
    assert [list(part) for part in here["doc"]] == there["doc"]
    assert 0 <= here["id"] < 2**31


def test_title_terms_weigh_more_than_body_terms() -> None:
    body = "Solar panels convert light. Wind turbines convert motion."
    plain = weights(document_sparse(body))
    titled = weights(document_sparse(body, title="Wind turbines"))
    wind, solar = term_id(terms("wind")[0]), term_id(terms("solar")[0])
    # Without a title both words occur once and weigh the same; as a title word, wind weighs more.
    assert plain[wind] == plain[solar]
    assert titled[wind] > titled[solar]
    assert TITLE_WEIGHT > 0


def test_repeated_terms_saturate_and_long_documents_weigh_less() -> None:
    one = weights(document_sparse("apple"))
    many = weights(document_sparse("apple apple apple apple"))
    long = weights(document_sparse("apple " + " ".join(f"word{i}" for i in range(300))))
    apple = term_id("appl")
    assert one[apple] < many[apple] < 1 + BM25_K1  # bounded by k1 + 1
    assert long[apple] < one[apple]


def test_query_values_count_repeated_terms() -> None:
    indices, values = query_sparse("apple pie, apples and apple juice")
    weight = dict(zip(indices, values, strict=True))
    assert weight[term_id("appl")] == 3.0
    assert weight[term_id("pie")] == weight[term_id("juic")] == 1.0
    assert indices == sorted(indices)
