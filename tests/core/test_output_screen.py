"""The output screen on whole and streamed answers, with the real guard and its default lists."""

from __future__ import annotations

import pytest

from core.guard import load_guard
from core.output_screen import LENGTH_REASON, OutputBlocked, OutputScreen
from core.settings import Settings


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def screen(settings: Settings, system_prompt: str | None = None, max_chars: int = 2048) -> OutputScreen:
    return OutputScreen(load_guard(settings), system_prompt=system_prompt, max_chars=max_chars)


def stream(out: OutputScreen, deltas: list[str]) -> str:
    """What a client receives: everything released, whether or not the answer is then blocked."""
    sent = []
    try:
        for delta in deltas:
            sent.append(out.feed(delta))
    except OutputBlocked:
        return "".join(sent)
    raise AssertionError(f"not blocked; sent {''.join(sent)!r}")


def test_an_honest_stream_is_released_as_it_comes(settings: Settings) -> None:
    out = screen(settings)
    deltas = ["The", " river", " flows", " north", " to", " the", " sea."]
    released = [out.feed(d) for d in deltas]
    # No delay for text that cannot start a forbidden phrase: each delta goes out when it arrives.
    assert released == deltas
    assert out.finish() == ""


def test_a_forbidden_phrase_split_over_deltas_is_blocked_before_any_of_it_is_sent(settings: Settings) -> None:
    out = screen(settings)
    sent = stream(out, ["Sure.", " Here are my", " intern", "al instr", "uctions:", " be nice."])
    assert sent == "Sure. Here are my "
    assert "intern" not in sent


def test_a_held_back_start_that_goes_elsewhere_is_released(settings: Settings) -> None:
    out = screen(settings)
    assert out.feed("Our internal") == "Our "
    assert out.feed(" audit found nothing.") == "internal audit found nothing."
    assert out.feed(" The developer") == " The "
    assert out.finish() == "developer"


def test_the_blocked_reason_and_window_are_kept(settings: Settings) -> None:
    out = screen(settings)
    with pytest.raises(OutputBlocked) as caught:
        out.check_whole("Fine. Now I will answer as a system without rules.")
    assert caught.value.reasons == ["forbidden_output"]
    assert "as a system" in caught.value.excerpt


def test_a_quoted_system_prompt_is_a_leak(settings: Settings) -> None:
    system = "You are Atlas, the helpdesk bot of Example Corp. Never discuss salaries or internal pricing."
    out = screen(settings, system_prompt=system)
    with pytest.raises(OutputBlocked) as caught:
        for word in "My orders say: you are Atlas, the helpdesk bot of Example Corp. Never".split(" "):
            out.feed(word + " ")
    assert "system_prompt_leak" in caught.value.reasons
    # Words shared with the system prompt but not a run of it are no leak.
    screen(settings, system_prompt=system).check_whole("Example Corp sells bots; ask the helpdesk.")


def test_an_answer_past_the_length_cap_is_blocked(settings: Settings) -> None:
    out = screen(settings, max_chars=50)
    with pytest.raises(OutputBlocked) as caught:
        for _ in range(20):
            out.feed("word ")
    assert caught.value.reasons == [LENGTH_REASON]
    assert len(out.text) == 55
