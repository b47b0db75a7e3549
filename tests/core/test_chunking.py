"""Chunking by the embedding model's own tokenizer: limits, overlap, boundaries, pages, the chunk cap."""

from __future__ import annotations

import random
import re
import time
from itertools import pairwise
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from core.chunking import Chunker, load_tokenizer, read_chunks, write_chunks
from core.schemas import PageText
from core.settings import PROJECT_ROOT

TOKENIZER = PROJECT_ROOT / "models" / "all-MiniLM-L6-v2" / "tokenizer.json"

ENGLISH = (
    "search index chunk page token model embedding vector query answer document engine worker "
    "server queue network memory parser limit boundary sentence paragraph overlap retrieval user "
    "system design storage result request response history workflow activity timeout retry"
).split()
RUSSIAN = (
    "документ страница поиск запрос ответ модель память граница предложение абзац сервер очередь "
    "работа время пользователь система данные текст вектор индекс результат история процесс лимит "
    "проверка загрузка разбор извлечение хранилище перекрытие"
).split()


def prose(words: list[str], paragraphs: int, seed: int) -> str:
    """Paragraphs of sentences of 6 to 24 words, the same for the same seed."""
    rng = random.Random(seed)
    result = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 24)))
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".!?."))
        result.append(" ".join(sentences))
    return "\n\n".join(result)


def pages_of(words: list[str], count: int, paragraphs: int = 8) -> list[PageText]:
    return [PageText(page=n, text=prose(words, paragraphs, seed=n)) for n in range(1, count + 1)]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer(TOKENIZER)


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker.from_file(TOKENIZER, max_chunk_tokens=200, overlap_tokens=40, max_embed_tokens=256)


def test_tokenizer_counts_past_the_models_own_truncation(tokenizer: Tokenizer) -> None:
    # The file says: truncate and pad to 128. A count must not stop there.
    long = prose(ENGLISH, 20, seed=1)
    assert len(tokenizer.encode(long).ids) > 1000
    assert len(tokenizer.encode("two words").ids) == 4  # [CLS] two words [SEP], no padding


@pytest.mark.parametrize("words", [ENGLISH, RUSSIAN], ids=["english", "russian"])
def test_every_chunk_fits_the_embedder_as_it_will_see_it(
    chunker: Chunker, tokenizer: Tokenizer, words: list[str]
) -> None:
    pages = pages_of(words, 5)
    chunks = chunker.chunk_pages(pages, max_chunks=10_000).chunks
    assert len(chunks) > 15
    for chunk in chunks:
        with_specials = len(tokenizer.encode(chunk.text).ids)
        without = len(tokenizer.encode(chunk.text, add_special_tokens=False).ids)
        assert with_specials <= 256
        assert without <= 200
        assert chunk.token_count == without
    # Chunks are not needlessly small: most of them fill at least half the window.
    assert sum(chunk.token_count >= 100 for chunk in chunks) >= 0.8 * len(chunks)


def test_russian_chunks_are_exact_slices_that_end_between_words(chunker: Chunker) -> None:
    pages = pages_of(RUSSIAN, 3)
    chunks = chunker.chunk_pages(pages, max_chunks=10_000).chunks
    assert all(re.search("[а-яё]", chunk.text) for chunk in chunks)
    for chunk in chunks:
        assert pages[chunk.page - 1].text[chunk.char_start : chunk.char_end] == chunk.text
    # Russian words take several of this English model's tokens, so a long sentence may not fit a
    # chunk: such a chunk ends between words instead.
    ends = [chunk.text[-1] for chunk in chunks]
    assert sum(end in ".!?" for end in ends) >= 0.8 * len(ends)
    for chunk in chunks:
        after = pages[chunk.page - 1].text[chunk.char_end : chunk.char_end + 1]
        assert after in ("", " ", "\n")


def test_chunks_overlap_and_start_at_a_sentence(chunker: Chunker) -> None:
    page = pages_of(ENGLISH, 1, paragraphs=20)[0]
    spans = chunker.split(page.text)
    assert len(spans) > 5
    for previous, current in pairwise(spans):
        assert current.start < previous.end, "consecutive chunks share text"
        assert current.end > previous.end, "each chunk adds new text"
        shared = page.text[current.start : previous.end]
        assert 0 < chunker.count_tokens(shared) <= 40
        # The shared part starts where a sentence does.
        assert page.text[current.start].isupper()
        assert page.text[: current.start].rstrip()[-1] in ".!?"


def test_no_overlap_when_asked_for_none() -> None:
    chunker = Chunker.from_file(TOKENIZER, max_chunk_tokens=200, overlap_tokens=0, max_embed_tokens=256)
    text = prose(ENGLISH, 20, seed=3)
    spans = chunker.split(text)
    assert all(current.start >= previous.end for previous, current in pairwise(spans))
    # Nothing is lost between chunks but white space.
    for previous, current in pairwise(spans):
        assert text[previous.end : current.start].strip() == ""


def test_pages_are_kept_and_indices_are_dense_in_document_order(chunker: Chunker) -> None:
    pages = [*pages_of(ENGLISH, 3), PageText(page=4, error="blank page"), *pages_of(ENGLISH, 6)[4:]]
    result = chunker.chunk_pages(pages, max_chunks=10_000)
    chunks = result.chunks
    assert [chunk.chunk_index for chunk in chunks] == list(range(len(chunks)))
    assert [chunk.page for chunk in chunks] == sorted(chunk.page for chunk in chunks)
    assert {chunk.page for chunk in chunks} == {1, 2, 3, 5, 6}
    by_page = {page.page: page.text for page in pages}
    for chunk in chunks:
        assert by_page[chunk.page][chunk.char_start : chunk.char_end] == chunk.text
    assert not result.truncated and result.warnings == []
    assert result.token_count == sum(chunk.token_count for chunk in chunks)


def test_chunking_is_deterministic(chunker: Chunker) -> None:
    pages = pages_of(RUSSIAN, 2) + pages_of(ENGLISH, 4)[2:]
    first = chunker.chunk_pages(pages, max_chunks=10_000).chunks
    again = Chunker.from_file(TOKENIZER, max_chunk_tokens=200, overlap_tokens=40, max_embed_tokens=256)
    assert [c.model_dump() for c in again.chunk_pages(pages, max_chunks=10_000).chunks] == [
        c.model_dump() for c in first
    ]


def test_the_chunk_cap_stops_chunking_and_says_where(chunker: Chunker) -> None:
    pages = pages_of(ENGLISH, 4)
    everything = chunker.chunk_pages(pages, max_chunks=10_000).chunks
    cap = len([chunk for chunk in everything if chunk.page <= 2]) + 1  # one chunk into page 3
    result = chunker.chunk_pages(pages, max_chunks=cap)
    assert result.truncated
    assert [c.model_dump() for c in result.chunks] == [c.model_dump() for c in everything[:cap]]
    assert len(result.warnings) == 1
    assert f"only the first {cap} chunks" in result.warnings[0]
    assert "from page 3 on (pages 3-4)" in result.warnings[0]
    # Exactly as many chunks as the cap: nothing was cut, nothing to warn about.
    exact = chunker.chunk_pages(pages, max_chunks=len(everything))
    assert not exact.truncated and exact.warnings == []


def test_text_without_any_boundary_is_cut_within_the_limits(chunker: Chunker, tokenizer: Tokenizer) -> None:
    rng = random.Random(7)
    blob = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(20_000)
    )
    text = f"Attachment follows.\n\n{blob}\n\nДлинноеслово" + "ё" * 3000
    spans = chunker.split(text)
    assert len(spans) > 10
    for span in spans:
        assert len(tokenizer.encode(text[span.start : span.end]).ids) <= 256
    assert spans[-1].end == len(text)
    covered = 0
    for span in spans:
        assert span.start <= covered or not text[covered : span.start].strip()
        covered = max(covered, span.end)


def test_a_small_embedder_window_bounds_the_chunk(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, max_chunk_tokens=200, overlap_tokens=10, max_embed_tokens=64)
    assert chunker.budget == 62  # 64 less [CLS] and [SEP]
    for chunk in chunker.chunk_pages(pages_of(ENGLISH, 2), max_chunks=10_000).chunks:
        assert len(tokenizer.encode(chunk.text).ids) <= 64


def test_another_embedders_tokenizer_can_be_used(tmp_path: Path) -> None:
    # A word-level tokenizer with no special tokens: chunks are counted in its words, not MiniLM's pieces.
    vocabulary = {"[UNK]": 0} | {word: n for n, word in enumerate(sorted(set(ENGLISH)), 1)}
    word_level = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    path = tmp_path / "words.json"
    word_level.save(str(path))
    chunker = Chunker.from_file(path, max_chunk_tokens=30, overlap_tokens=5, max_embed_tokens=512)
    assert chunker.special_tokens == 0 and chunker.budget == 30
    text = prose(ENGLISH, 10, seed=11)
    spans = chunker.split(text)
    assert len(spans) > 5
    for span in spans:
        pieces = re.findall(r"\w+|[^\w\s]", text[span.start : span.end])
        assert len(pieces) == span.token_count <= 30


def test_limits_that_cannot_work_are_refused(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        Chunker(tokenizer, max_chunk_tokens=200, overlap_tokens=0, max_embed_tokens=8)
    with pytest.raises(ValueError, match="overlap"):
        Chunker(tokenizer, max_chunk_tokens=100, overlap_tokens=60, max_embed_tokens=256)


def test_empty_and_tiny_pages(chunker: Chunker) -> None:
    assert chunker.split("") == []
    assert chunker.split("   \n ") == []
    (only,) = chunker.split("  One short line.  ")
    assert (only.start, only.end, only.token_count) == (2, 17, 4)


def test_chunks_round_trip_through_json_lines(chunker: Chunker, tmp_path: Path) -> None:
    chunks = chunker.chunk_pages(pages_of(RUSSIAN, 2), max_chunks=10_000).chunks
    path = tmp_path / "doc.chunks.jsonl"
    write_chunks(path, chunks)
    assert list(read_chunks(path)) == chunks
    assert list(read_chunks(path, start=3)) == chunks[3:]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_chunking_speed(chunker: Chunker) -> None:
    """A hundred pages of about 3 000 characters each, as a long PDF gives them."""
    pages = pages_of(ENGLISH, 100, paragraphs=6)
    characters = sum(len(page.text) for page in pages)
    started = time.perf_counter()
    result = chunker.chunk_pages(pages, max_chunks=20_000)
    elapsed = time.perf_counter() - started
    print(
        f"\nchunked {len(pages)} pages, {characters} characters, {result.token_count} tokens into "
        f"{len(result.chunks)} chunks in {elapsed * 1000:.0f} ms ({characters / elapsed / 1e6:.2f} M chars/s)"
    )
    assert elapsed < 10
