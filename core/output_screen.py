"""A model's answer screened by the guard as it is produced, streamed or whole.

Each new piece of text is checked together with the WINDOW_CHARS before it, so a forbidden phrase or a
quoted system prompt that arrives split over many stream deltas is whole in one window. Text that could
still become a forbidden phrase (its tail is the start of one) is held back until the next delta shows
what it is, so no part of a blocked phrase reaches the client; text needs no other delay, so the first
token is not held back. A system prompt is quoted over several words before a quote is recognisable:
those words may reach a streamed client before the answer is blocked.
"""

from __future__ import annotations

import re

from core.guard import Guard

WINDOW_CHARS = 600
LENGTH_REASON = "response_too_long"
# Answer-side markers of a leaked prompt (core/guard.py _OUTPUT_MARKERS), held back as phrases too.
_MARKER_PHRASES = ("<<sys>>", "<|im_start|>", "<|system|>", "[inst]")


class OutputBlocked(Exception):
    def __init__(self, reasons: list[str], score: float, excerpt: str) -> None:
        super().__init__(f"the answer was blocked by the output guard ({', '.join(reasons)})")
        self.reasons = reasons
        self.score = score
        self.excerpt = excerpt  # the window that was refused, for the security event


class OutputScreen:
    def __init__(self, guard: Guard, *, system_prompt: str | None, max_chars: int) -> None:
        self.guard = guard
        self.system_prompt = system_prompt
        self.max_chars = max_chars
        self.text = ""  # everything received so far
        self._released = 0  # how much of it may be sent
        phrases = [*guard.settings.forbidden_llm_output, *_MARKER_PHRASES]
        self._phrases = [" ".join(p.lower().split()) for p in phrases if p.strip()]
        self._longest = max((len(p) for p in self._phrases), default=0)

    def feed(self, delta: str) -> str:
        """The part of the answer that may go to the client now; OutputBlocked when it may not go on."""
        self.text += delta
        self._check(self.text[-(len(delta) + WINDOW_CHARS) :])
        hold_from = self._hold_from()
        released, self._released = self.text[self._released : hold_from], max(self._released, hold_from)
        return released

    def finish(self) -> str:
        """The rest of the answer, once the model has finished it."""
        rest, self._released = self.text[self._released :], len(self.text)
        return rest

    def check_whole(self, text: str) -> None:
        """A whole answer (not streamed): OutputBlocked when it may not be returned."""
        self.text = text
        self._check(text)

    def _check(self, window: str) -> None:
        if len(self.text) > self.max_chars:
            raise OutputBlocked([LENGTH_REASON], 1.0, self.text[-WINDOW_CHARS:])
        verdict = self.guard.check(window, "output", system_prompt=self.system_prompt)
        if not verdict.allowed:
            raise OutputBlocked(verdict.reasons, verdict.score, window[-WINDOW_CHARS:])

    def _hold_from(self) -> int:
        """Where the tail that may be the start of a forbidden phrase begins (len(text): no such tail)."""
        tail_start = max(len(self.text) - self._longest, self._released)
        for start in range(tail_start, len(self.text)):
            tail = _WHITESPACE.sub(" ", self.text[start:].lower())
            if tail.strip() and any(p.startswith(tail) for p in self._phrases):
                return start
        return len(self.text)


_WHITESPACE = re.compile(r"\s+")
