"""Loads the local models and runs them: chat generation (whole or streamed) and embeddings.

Generation runs in a worker thread so the event loop keeps serving health checks and streams. One
request generates at a time per model: on a CPU, two generations at once only share the same cores.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

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
    def __init__(self, name: str, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.model = SentenceTransformer(str(path), device="cpu")
        self.dimensions = int(self.model.get_embedding_dimension())
        self._lock = asyncio.Lock()

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.model.tokenizer(texts, truncation=True)["input_ids"])

    async def embed(self, texts: list[str]) -> list[list[float]]:
        async with self._lock:
            vectors = await asyncio.to_thread(
                self.model.encode, texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
            )
        return vectors.tolist()


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
