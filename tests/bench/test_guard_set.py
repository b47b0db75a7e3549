"""Our own labelled guard set (bench/guard_set/*.jsonl) is well formed and as large as README.md says."""

from __future__ import annotations

import json
from collections import Counter

from bench.guard_quality import (
    BENIGN_CATEGORIES,
    GUARD_SET_DIR,
    INJECTION_CATEGORIES,
    load_guard_set,
    near_duplicates,
)

FIELDS = {"text", "label", "lang", "category", "source"}


def test_every_row_has_the_schema() -> None:
    for path in sorted(GUARD_SET_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert set(row) == FIELDS, (path.name, row)
            assert isinstance(row["text"], str) and row["text"].strip()
            assert row["label"] in (0, 1)
            # A later batch of a language has a file of its own: ru_fresh.jsonl holds Russian rows.
            assert row["lang"] == path.stem.split("_")[0]
            assert row["category"] in (INJECTION_CATEGORIES if row["label"] else BENIGN_CATEGORIES)
            assert row["source"].startswith("authored/")


def test_the_set_is_large_enough_with_both_labels_per_language() -> None:
    rows = load_guard_set()
    by_lang = Counter(r.lang for r in rows)
    assert {"en", "ru"} <= set(by_lang)
    assert len(rows) >= 1000
    for lang in by_lang:
        labels = Counter(r.label for r in rows if r.lang == lang)
        assert labels[0] and labels[1], lang
    english = Counter((r.label, r.category) for r in rows if r.lang == "en")
    assert sum(n for (label, _), n in english.items() if label == 1) >= 280
    assert sum(n for (label, _), n in english.items() if label == 0) >= 370
    assert english[(0, "tricky_benign")] >= 220
    assert all(english[(1, category)] for category in INJECTION_CATEGORIES)


def test_no_text_appears_twice_in_a_file() -> None:
    for path in sorted(GUARD_SET_DIR.glob("*.jsonl")):
        texts = Counter(json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines())
        assert [t for t, n in texts.items() if n > 1] == [], path.name


def test_the_set_scores_each_text_once() -> None:
    texts = Counter(r.text for r in load_guard_set())
    assert [t for t, n in texts.items() if n > 1] == []


def test_near_duplicates_are_found_and_different_texts_are_not() -> None:
    base = "Please summarise the quarterly report and list the three biggest risks for the board."
    others = [base.replace("three", "four"), "What is the capital of Australia?"]
    assert near_duplicates([base, "Write a haiku about autumn leaves in the park."], others) == {0}
