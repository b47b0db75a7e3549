"""Cuts page texts into chunks for embedding, counted in the embedding model's own tokens.

A chunk holds at most `max_chunk_tokens` tokens, and never more than the embedder takes once its special
tokens ([CLS] ... [SEP]) are added, so nothing is cut off silently at embedding time. Consecutive chunks of
a page share up to `overlap_tokens` tokens. A chunk ends at the strongest boundary in the second half of
its window (paragraph, then sentence, line, word) and only falls back to a cut between tokens where the
text has no boundary at all (a long URL, a base64 blob). Chunks never span pages: each keeps its page.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import tiktoken
from tokenizers import Tokenizer

from core.schemas import DocumentChunk, PageText
from core.settings import Settings
from core.token_counts import cache_dir_for, encoding_for, encoding_name_for

# Strength of the boundary before a token: the chunker ends chunks at the strongest one it can.
PARAGRAPH, SENTENCE, LINE, WORD, NO_BOUNDARY = 3, 2, 1, 0, -1

_SENTENCE_END = frozenset(".!?…。！？")
_CLOSING = "\"')]}»”’"


@lru_cache(maxsize=8)
def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json, or a model directory that holds one."""
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(file))
    # tokenizer.json files carry the model's truncation and padding (all-MiniLM-L6-v2's: 128 tokens):
    # left on, every count above it would come out as 128.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


# A tokenizer spec naming a tiktoken encoding instead of a tokenizer.json: "tiktoken:cl100k_base".
TIKTOKEN_PREFIX = "tiktoken:"


class TiktokenEncoded:
    """What Chunker reads of a `tokenizers` Encoding: the ids, and each token's character span."""

    def __init__(self, text: str, token_bytes: list[bytes], ids: list[int]) -> None:
        self.text = text
        self.token_bytes = token_bytes
        self.ids = ids

    @cached_property
    def offsets(self) -> list[tuple[int, int]]:
        """(start, end) characters of each token. A token holding part of a character (byte-level BPE
        splits rare characters) spans that whole character, like its neighbour does."""
        text = self.text
        if text.isascii():
            char_at = list(range(len(text) + 1))
        else:
            char_at = []
            for index, char in enumerate(text):
                char_at.extend([index] * len(char.encode("utf-8", "surrogatepass")))
            char_at.append(len(text))
        offsets = []
        position = 0
        for piece in self.token_bytes:
            start = char_at[position]
            position += len(piece)
            offsets.append((start, char_at[position - 1] + 1))
        if position != len(char_at) - 1:
            raise ValueError("the tokens do not add up to the text (it holds characters tiktoken replaced)")
        return offsets


class TiktokenTokenizer:
    """A tiktoken encoding (OpenAI's tokenizers) behind the calls Chunker makes of a `tokenizers` one.
    OpenAI's embedders add no special tokens, and text that looks like one ("<|endoftext|>") is text."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding

    def encode(self, text: str, add_special_tokens: bool = True) -> TiktokenEncoded:
        ids = self.encoding.encode_ordinary(text)
        return TiktokenEncoded(text, self.encoding.decode_tokens_bytes(ids), ids)


def load_chunk_tokenizer(
    spec: str | Path, tiktoken_cache_dir: Path | None = None
) -> Tokenizer | TiktokenTokenizer:
    """A tokenizer.json (or a model directory that holds one), or "tiktoken:<encoding or OpenAI model>"."""
    if isinstance(spec, str) and spec.startswith(TIKTOKEN_PREFIX):
        return TiktokenTokenizer(encoding_for(spec.removeprefix(TIKTOKEN_PREFIX), tiktoken_cache_dir))
    return load_tokenizer(str(spec))


def tokenizer_for_embedder(settings: Settings, embedder: str) -> str:
    """The tokenizer spec to chunk for an embedder ("provider/model") with: OpenAI's models count in
    their tiktoken encoding; a local model in its own tokenizer.json. Gemini and Ollama publish no
    tokenizer to count with offline, and the local model's (the one used before) stands in: chunks stay
    far below their input limits (2048 tokens and more) either way."""
    provider, _, model = embedder.partition("/")
    if provider == "openai":
        return TIKTOKEN_PREFIX + encoding_name_for(model)
    if provider == "local" and model:
        own = settings.model_path(model) / "tokenizer.json"
        if own.is_file():
            return str(own)
    return str(settings.model_path(settings.local_embedding_model) / "tokenizer.json")


def chunker_for_embedder(
    settings: Settings, embedder: str, *, max_chunk_tokens: int, overlap_tokens: int, max_embed_tokens: int
) -> Chunker:
    """A Chunker counting in the tokens of `embedder`'s tokenizer (see tokenizer_for_embedder)."""
    return Chunker(
        load_chunk_tokenizer(tokenizer_for_embedder(settings, embedder), cache_dir_for(settings)),
        max_chunk_tokens=max_chunk_tokens,
        overlap_tokens=overlap_tokens,
        max_embed_tokens=max_embed_tokens,
    )


@dataclass
class ChunkedPages:
    chunks: list[DocumentChunk]
    warnings: list[str]
    truncated: bool  # the chunk limit stopped chunking before the end of the document

    @property
    def token_count(self) -> int:
        return sum(chunk.token_count for chunk in self.chunks)


@dataclass(frozen=True)
class Span:
    start: int  # character offsets in the page text
    end: int
    token_count: int


class Chunker:
    def __init__(
        self,
        tokenizer: Tokenizer | TiktokenTokenizer,
        *,
        max_chunk_tokens: int,
        overlap_tokens: int,
        max_embed_tokens: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = len(tokenizer.encode("", add_special_tokens=True).ids)
        self.budget = min(max_chunk_tokens, max_embed_tokens - self.special_tokens)
        if self.budget < 8:
            raise ValueError(
                f"a chunk of {max_chunk_tokens} tokens does not fit the embedder's {max_embed_tokens} "
                f"with its {self.special_tokens} special tokens"
            )
        # Each chunk must reach past the previous one's end, or chunking would not move on.
        if not 0 <= overlap_tokens <= self.budget // 2:
            raise ValueError(f"overlap must be between 0 and half a chunk ({self.budget // 2} tokens)")
        self.overlap = overlap_tokens

    @classmethod
    def from_file(
        cls,
        tokenizer_path: str | Path,
        *,
        max_chunk_tokens: int,
        overlap_tokens: int,
        max_embed_tokens: int,
        tiktoken_cache_dir: Path | None = None,
    ) -> Chunker:
        """`tokenizer_path`: a tokenizer.json, a model directory holding one, or "tiktoken:<encoding>"
        (see tokenizer_for_embedder), whose BPE file goes to `tiktoken_cache_dir` (None: see
        core.token_counts.encoding_for)."""
        return cls(
            load_chunk_tokenizer(tokenizer_path, tiktoken_cache_dir),
            max_chunk_tokens=max_chunk_tokens,
            overlap_tokens=overlap_tokens,
            max_embed_tokens=max_embed_tokens,
        )

    def count_tokens(self, text: str, *, special_tokens: bool = False) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=special_tokens).ids)

    def split(self, text: str) -> list[Span]:
        """The chunks of one page's text, in order."""
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        count = len(offsets)
        if not count:
            return []
        strengths = _boundary_strengths(text, offsets)
        spans: list[Span] = []
        start, previous_end = 0, 0
        while True:
            end = self._end(strengths, start, previous_end, count)
            span = self._measure(text, offsets, start, end)
            while span.token_count > self.budget and end - start > 1:
                # Re-tokenising a cut text can give more tokens than the cut (a word split between
                # tokens); shrink until the chunk fits as the embedder will see it.
                end -= 1
                span = self._measure(text, offsets, start, end)
            spans.append(span)
            if end >= count:
                return spans
            start, previous_end = self._next_start(strengths, start, end), end

    def chunk_pages(
        self,
        pages: Sequence[PageText],
        *,
        max_chunks: int,
        on_page: Callable[[int], None] | None = None,
    ) -> ChunkedPages:
        """Chunks of every page with text, indexed 0..n-1 in document order, up to max_chunks; past it
        chunking stops and says so in a warning. `on_page` is told each page done and may raise to stop."""
        chunks: list[DocumentChunk] = []
        for page in pages:
            for span in self.split(page.text) if page.text else []:
                if len(chunks) == max_chunks:
                    last_page = pages[-1].page
                    rest = f"page {page.page}" if page.page == last_page else f"pages {page.page}-{last_page}"
                    warning = (
                        f"chunk limit reached: only the first {max_chunks} chunks are indexed; "
                        f"text from page {page.page} on ({rest}) is not searchable"
                    )
                    return ChunkedPages(chunks, [warning], truncated=True)
                chunks.append(
                    DocumentChunk(
                        chunk_index=len(chunks),
                        page=page.page,
                        text=page.text[span.start : span.end],
                        token_count=span.token_count,
                        char_start=span.start,
                        char_end=span.end,
                    )
                )
            if on_page is not None:
                on_page(page.page)
        return ChunkedPages(chunks, [], truncated=False)

    def _end(self, strengths: list[int], start: int, previous_end: int, count: int) -> int:
        """Where the chunk that starts at token `start` ends (exclusive)."""
        limit = start + self.budget
        if limit >= count:
            return count
        # A chunk may end early at a strong boundary, but not before half its size nor inside the
        # previous chunk (which would add nothing new).
        low = max(start + self.budget // 2, previous_end + 1)
        best = _strongest(strengths, low, limit, latest=True)
        if strengths[best] >= WORD:
            return best
        lowest = max(start + 1, previous_end + 1)
        if lowest < low:
            earlier = _strongest(strengths, lowest, low - 1, latest=True)
            if strengths[earlier] >= WORD:
                return earlier
        return limit

    def _next_start(self, strengths: list[int], start: int, end: int) -> int:
        """Where the next chunk starts: within `overlap` tokens before `end`, at the strongest boundary,
        the earliest among equals (the most overlap the limit allows)."""
        low = max(start + 1, end - self.overlap)
        if low >= end:
            return end
        best = _strongest(strengths, low, end - 1, latest=False)
        return best if strengths[best] >= WORD else low

    def _measure(self, text: str, offsets: list[tuple[int, int]], start: int, end: int) -> Span:
        first = offsets[start][0]
        # Tokenizers that fold the leading space into a token (byte-level BPE) start it on that space.
        while first < offsets[start][1] and text[first].isspace():
            first += 1
        last = offsets[end - 1][1]
        return Span(first, last, self.count_tokens(text[first:last]))


def _strongest(strengths: list[int], low: int, high: int, *, latest: bool) -> int:
    """Index in [low, high] of the strongest boundary; ties go to the latest or the earliest."""
    best = high if latest else low
    indices = range(high, low - 1, -1) if latest else range(low, high + 1)
    for index in indices:
        if strengths[index] > strengths[best]:
            best = index
            if strengths[best] == PARAGRAPH:
                break
    return best


def _boundary_strengths(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """strengths[i]: the boundary before token i; the ends of the text count as paragraph boundaries."""
    count = len(offsets)
    strengths = [PARAGRAPH] * (count + 1)
    previous_end = offsets[0][1]
    for index in range(1, count):
        start, end = offsets[index]
        gap_end = start
        while gap_end < end and text[gap_end].isspace():
            gap_end += 1
        gap = text[previous_end:gap_end]
        if not gap:
            strength = NO_BOUNDARY  # inside a word, or punctuation attached to one
        elif "\n\n" in gap:
            strength = PARAGRAPH
        else:
            before = text[max(0, previous_end - 4) : previous_end].rstrip(_CLOSING)
            if before and before[-1] in _SENTENCE_END:
                strength = SENTENCE
            elif "\n" in gap:
                strength = LINE
            else:
                strength = WORD
        strengths[index] = strength
        previous_end = max(previous_end, end)
    return strengths


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (a retried activity rewrites it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_chunks(path: Path, chunks: Sequence[DocumentChunk]) -> None:
    """JSON lines, one chunk each, so a reader can stream a document of 20 000 chunks."""
    write_atomic(path, "".join(chunk.model_dump_json() + "\n" for chunk in chunks).encode())


def read_chunks(path: str | Path, start: int = 0) -> Iterator[DocumentChunk]:
    """The chunks written by write_chunks, from chunk_index `start` on."""
    with open(path, encoding="utf-8") as file:
        for index, line in enumerate(file):
            if index >= start:
                yield DocumentChunk.model_validate(json.loads(line))
