"""The prompt guard: decides, without calling a model, whether a text may reach one (or leave one).

Tiers, cheapest first:
1. normalisation: NFKC, invisible and control characters dropped, Cyrillic/Greek look-alikes inside
   Latin words mapped to Latin, base64 blobs decoded and checked as text of their own;
2. rules: precise patterns that only fire on an instruction to override, a role switch or a request
   for the hidden prompt (English, Russian, German), plus the seed's broad lists as weak signals;
3. a linear classifier over hashed character and word n-grams (core/guard_model/, rebuilt by
   scripts/train_guard.py), on CPU in about a millisecond.

The verdict is {allowed, score, reasons}: score is the strongest evidence in 0..1, reasons are stable
codes (REASONS) of every signal found, allowed is score < the threshold of the text's kind. A text's
length is never evidence.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.schemas import GuardKind, GuardVerdict
from core.settings import Settings, get_settings

REASONS: dict[str, str] = {
    # Strong: each alone refuses the text.
    "instruction_override": "asks to ignore, forget or replace the instructions the model was given",
    "role_override": "asks the model to drop its role or restrictions (developer mode, DAN, unrestricted)",
    "prompt_exfiltration": "asks for the system prompt, hidden instructions or context",
    "encoded_payload": "a base64 blob decodes to text the guard refuses",
    "classifier": "the learned classifier scores the text at or above the threshold",
    "forbidden_output": "a model's answer contains a phrase of FORBIDDEN_LLM_OUTPUT",
    "system_prompt_leak": "a model's answer shows system-prompt markers or quotes the system prompt",
    "forbidden_command": "tool arguments contain a command of FORBIDDEN_COMMANDS",
    # Weak: each raises the score by guard_weak_signal_weight, never refuses alone.
    "instruction_language": "imperative phrasing from the seed's instruction lists",
    "role_language": "role phrasing from the seed's role-override list",
    "meta_system_language": "mentions of system prompts or instructions from the seed's lists",
    "obfuscation": "invisible characters or words mixing Latin with Cyrillic/Greek look-alikes",
}

_STRONG_SCORE = 1.0
_MAX_WEAK_HITS = 4
# Long texts are scored in overlapping windows, the highest window wins: an injection hidden in a long
# document is as visible as a short one.
_WINDOW_CHARS = 1000
_WINDOW_STEP = 800
_MIN_BASE64_CHARS = 16
_MAX_DECODE_DEPTH = 2

# Zero-width, bidi and soft-hyphen characters: invisible, used to split trigger words.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁԛԝһкАВЕКМНОРСТХУІЈЅαοινρκτυεΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijsdqwhkABEKMHOPCTXYIJSaoivpktueABEZHIKMNOPTYX",
)
_LATIN = re.compile("[a-zA-Z]")
_CONFUSABLE = re.compile("[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")
_WORD = re.compile(r"[^\W\d_]+")
_BASE64 = re.compile(rf"[A-Za-z0-9+/]{{{_MIN_BASE64_CHARS},}}={{0,2}}")


@dataclass(frozen=True)
class Normalised:
    text: str
    obfuscated: bool


def normalise(text: str) -> Normalised:
    """The text as a reader sees it; obfuscated when something was hidden from a plain string match."""
    folded = unicodedata.normalize("NFKC", text)
    visible = _INVISIBLE.sub("", folded)
    visible = _CONTROL.sub("", visible)
    obfuscated = len(visible) != len(folded)

    def unmix(match: re.Match[str]) -> str:
        nonlocal obfuscated
        word = match.group()
        # Only words that mix scripts: honest Russian or Greek text is left as it is.
        if _LATIN.search(word) and _CONFUSABLE.search(word):
            obfuscated = True
            return word.translate(_HOMOGLYPHS)
        return word

    return Normalised(_WORD.sub(unmix, visible), obfuscated)


def decoded_payloads(text: str) -> list[str]:
    """Readable UTF-8 text hidden in base64 blobs of text."""
    found = []
    for match in _BASE64.finditer(text):
        blob = match.group()
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
        if decoded.strip() and printable / len(decoded) > 0.95:
            found.append(decoded)
    return found


# Rules. Each is precise: an honest question that mentions a word ("What does 'ignore' mean?", "Tell me
# about Dan Brown", "Show me how to write a prompt") does not match.
_F = re.IGNORECASE | re.DOTALL
_OVERRIDE_VERB = r"(ignore|disregard|forget|override|bypass|skip|drop|abandon|discard)"
# Not "the" or "any": "Should I ignore the error message?" is a question, not an attack.
_EARLIER = r"(previous|prior|above|earlier|preceding|former|original|all|your|system)"
RULES_NOUN = (
    r"(instructions?|rules?|prompts?|directions?|directives?|guidelines?|tasks?|context|messages?|"
    r"restrictions?|constraints?|orders?|commands?|programming|policies|policy|filters?|assignments?)"
)
RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "instruction_override",
        re.compile(
            rf"\b{_OVERRIDE_VERB}\b[^.!?\n]{{0,40}}?\b{_EARLIER}\b[^.!?\n]{{0,30}}?\b{RULES_NOUN}\b", _F
        ),
    ),
    (
        "instruction_override",
        re.compile(r"\b(now|instead)\b[^.!?\n]{0,20}\bfocus on (your|a|the) new task\b", _F),
    ),
    ("instruction_override", re.compile(r"\bnew (instructions?|rules?|task)\s*(:|are|is|follow)", _F)),
    ("instruction_override", re.compile(r"\bfrom now on,? (you|your|respond|answer|act|only)\b", _F)),
    (
        "instruction_override",
        re.compile(
            r"\b(ignoriere|vergiss|vergessen sie|ignorieren sie)\b[^.!?\n]{0,50}\b"
            r"(anweisungen|aufgaben|aufträge|instruktionen|regeln|vorgaben|befehle|alles)\b",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"(игнорируй|проигнорируй|игнорировать|забудь|забудьте|не следуй|отбрось|отмени|игнорируйте)"
            r"[^.!?\n]{0,50}(инструкци|правил|указани|ограничени|установк|промпт|задани|всё|все)",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(you are no longer|you're no longer|developer mode|jailbreak mode|"
            r"(you are|you're) (now )?jailbroken|do anything now|"
            r"dan mode|god mode|unfiltered mode|no (ethical|moral) (guidelines|restrictions|limits))\b",
            _F,
        ),
    ),
    ("role_override", re.compile(r"\bDAN\b")),  # the jailbreak persona is written in capitals
    (
        "role_override",
        re.compile(
            r"\b(act as|pretend (to be|you are|you're)|roleplay as|you are now|imagine you are|behave as)\b"
            r"[^.!?\n]{0,60}\b(unrestricted|unfiltered|uncensored|jailbroken|evil|without (any )?"
            r"(restrictions|limits|limitations|filters|rules|ethics)|no (restrictions|limits|filters|rules))",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"(ты больше не|режим разработчика|без (каких-либо )?(ограничений|цензуры|фильтров)|"
            r"притворись|представь, что ты|теперь ты)",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(show|reveal|print|display|output|repeat|tell|give|leak|dump|list|spell|write out|"
            r"what (is|are|was|were))\b[^.!?\n]{0,30}?\b"
            r"(system prompt|initial prompt|original prompt|hidden (rules|instructions|prompt)|"
            r"internal instructions|developer message|pre-?prompt|your (instructions|prompt|rules|guidelines|"
            r"directives)|(the |your )?(text|words|everything) (above|before (this|that))|prompt texts?)\b",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(print everything you know|dump (your |the )?input|debug output|"
            r"reveal (the |your )?context)\b",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"(покажи|выведи|раскрой|напиши|повтори|какой|какие|скажи)[^.!?\n]{0,30}"
            r"(системн\w* (промпт|подсказк|инструкци|сообщени)|сво(и|й|ю) (инструкци|промпт|правил)|"
            r"скрыт\w* (инструкци|правил))",
            _F,
        ),
    ),
]

_OUTPUT_MARKERS = re.compile(
    r"(<<SYS>>|<\|im_start\|>\s*system|<\|system\|>|\[INST\]|^#{1,3}\s*system\s*:|"
    r"\bmy (system prompt|initial prompt|hidden instructions) (is|are|says|reads)\b)",
    re.IGNORECASE | re.MULTILINE,
)
_LEAK_SHINGLE_WORDS = 8


def _phrase(pattern: str) -> re.Pattern[str]:
    """A seed phrase as a whole-word, whitespace-tolerant pattern ("rm -rf" matches "rm  -rf")."""
    words = [re.escape(w) for w in pattern.split()]
    start = r"\b" if pattern[:1].isalnum() else ""
    end = r"\b" if pattern[-1:].isalnum() else ""
    return re.compile(start + r"\s+".join(words) + end, re.IGNORECASE)


def _hash_words(tokens: Sequence[str], salt: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(t.encode(), salt) for t in tokens), dtype=np.uint64, count=len(tokens))


_PRIME = np.uint64(1_000_003)
_MIX = np.uint64(0xFF51AFD7ED558CCD)


def features(text: str, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed character 3-5-grams and word 1-2-grams of a lowercased text: bucket indices and their
    L2-normalised log counts. Vectorised over code points, so a 1000-character window costs well under
    a millisecond. Shared by the guard and scripts/train_guard.py."""
    lowered = " " + " ".join(text.lower().split()) + " "
    codes = np.frombuffer(lowered.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts = []
    with np.errstate(over="ignore"):
        for n in (3, 4, 5):
            m = len(codes) - n + 1
            if m <= 0:
                continue
            h = np.full(m, n, dtype=np.uint64)
            for j in range(n):
                h = h * _PRIME + codes[j : j + m]
            parts.append(h)
        words = re.findall(r"\w+", lowered)
        parts.append(_hash_words(words, 1))
        parts.append(_hash_words([f"{a} {b}" for a, b in itertools.pairwise(words)], 2))
        hashed = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        hashed ^= hashed >> np.uint64(33)
        hashed *= _MIX
        hashed ^= hashed >> np.uint64(29)
    buckets, counts = np.unique(hashed & np.uint64(n_buckets - 1), return_counts=True)
    values = 1.0 + np.log(counts.astype(np.float32))
    norm = float(np.sqrt((values * values).sum())) or 1.0
    return buckets.astype(np.int64), values / norm


class LinearModel:
    """Logistic regression over hashed n-grams, read from the .npz that scripts/train_guard.py writes."""

    def __init__(self, weights: np.ndarray, bias: float, meta: dict[str, Any]) -> None:
        self.weights = weights.astype(np.float32)
        self.bias = bias
        self.meta = meta
        self.n_buckets = len(weights)

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            return cls(data["weights"], float(data["bias"]), meta)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.frombuffer(json.dumps(self.meta, sort_keys=True).encode(), dtype=np.uint8)
        with path.open("wb") as file:
            np.savez_compressed(
                file, weights=self.weights.astype(np.float16), bias=np.float32(self.bias), meta=meta
            )

    def probability(self, text: str) -> float:
        """The injection probability of the most suspicious window of the text."""
        best = 0.0
        for start in range(0, max(len(text) - _WINDOW_CHARS, 0) + 1, _WINDOW_STEP):
            buckets, values = features(text[start : start + _WINDOW_CHARS], self.n_buckets)
            z = float(self.weights[buckets] @ values) + self.bias
            best = max(best, 1.0 / (1.0 + np.exp(-z)))
        return best


class Guard:
    """Pure and thread-safe: all state is read once at construction."""

    def __init__(self, settings: Settings, model: LinearModel | None) -> None:
        self.settings = settings
        self.model = model
        self._thresholds: dict[str, float] = {
            "prompt": settings.guard_prompt_threshold,
            "document": settings.guard_document_threshold,
            "output": settings.guard_output_threshold,
        }
        self._weak: list[tuple[str, re.Pattern[str]]] = [
            *(("instruction_language", _phrase(p)) for p in settings.instruction_patterns),
            *(("instruction_language", re.compile(p, re.IGNORECASE)) for p in settings.instruction_regex),
            *(("role_language", re.compile(p, re.IGNORECASE)) for p in settings.role_override_regex),
            *(("meta_system_language", re.compile(p, re.IGNORECASE)) for p in settings.meta_system_regex),
            *(("meta_system_language", _phrase(p)) for p in settings.exfiltration_patterns),
        ]
        self._forbidden_output = [_phrase(p) for p in settings.forbidden_llm_output]
        self._forbidden_commands = [_phrase(p) for p in settings.forbidden_commands]

    def check(
        self, text: str, kind: GuardKind = "prompt", *, system_prompt: str | None = None
    ) -> GuardVerdict:
        """The verdict on a user's prompt, a document a model will read, or a model's output.
        For an output, system_prompt (when given) is what it must not quote."""
        threshold = self._thresholds[kind]
        if kind == "output":
            score, reasons = self._output_evidence(text, system_prompt)
        else:
            score, reasons = self._input_evidence(text, threshold, depth=0)
        return GuardVerdict(allowed=score < threshold, score=round(score, 4), reasons=sorted(reasons))

    def check_tool_arguments(self, arguments: Mapping[str, Any] | Sequence[Any] | str) -> GuardVerdict:
        """The verdict on the arguments an agent is about to pass to a tool."""
        texts = [normalise(t).text for t in _strings(arguments)]
        texts += [payload for t in texts for payload in decoded_payloads(t)]
        hit = any(p.search(t) for t in texts for p in self._forbidden_commands)
        reasons = ["forbidden_command"] if hit else []
        return GuardVerdict(allowed=not hit, score=_STRONG_SCORE if hit else 0.0, reasons=reasons)

    def _input_evidence(self, raw: str, threshold: float, depth: int) -> tuple[float, set[str]]:
        normalised = normalise(raw)
        text = normalised.text
        reasons = {code for code, rule in RULES if rule.search(text)}
        strong = _STRONG_SCORE if reasons else 0.0
        weak_hits = [code for code, rule in self._weak if rule.search(text)]
        if normalised.obfuscated:
            weak_hits.append("obfuscation")
        reasons.update(weak_hits)
        probability = self.model.probability(text) if self.model is not None else 0.0
        if probability >= threshold:
            reasons.add("classifier")
        remaining = (1.0 - probability) * (1.0 - self.settings.guard_weak_signal_weight) ** min(
            len(weak_hits), _MAX_WEAK_HITS
        )
        score = max(strong, 1.0 - remaining)
        if depth < _MAX_DECODE_DEPTH:
            for payload in decoded_payloads(text):
                inner, _ = self._input_evidence(payload, threshold, depth + 1)
                if inner >= threshold:
                    reasons.add("encoded_payload")
                    score = max(score, inner)
        return score, reasons

    def _output_evidence(self, raw: str, system_prompt: str | None) -> tuple[float, set[str]]:
        text = normalise(raw).text
        reasons = set()
        if any(p.search(text) for p in self._forbidden_output):
            reasons.add("forbidden_output")
        if _OUTPUT_MARKERS.search(text) or (system_prompt and _quotes(text, system_prompt)):
            reasons.add("system_prompt_leak")
        return (_STRONG_SCORE if reasons else 0.0), reasons


def _quotes(text: str, source: str) -> bool:
    """Whether text repeats any run of _LEAK_SHINGLE_WORDS consecutive words of source."""
    source_words = re.findall(r"\w+", normalise(source).text.lower())
    text_words = re.findall(r"\w+", text.lower())
    n = min(_LEAK_SHINGLE_WORDS, len(source_words))
    if n == 0:
        return False
    shingles = {tuple(source_words[i : i + n]) for i in range(len(source_words) - n + 1)}
    return any(tuple(text_words[i : i + n]) in shingles for i in range(len(text_words) - n + 1))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, Sequence | set):
        return [s for item in value for s in _strings(item)]
    return [str(value)] if value is not None else []


def load_guard(settings: Settings) -> Guard:
    # The model file is committed: a missing one is an error, not a silent rules-only guard.
    return Guard(
        settings, LinearModel.load(settings.guard_model_path) if settings.guard_use_classifier else None
    )


@lru_cache
def get_guard() -> Guard:
    """The process's guard on its settings; the model file is read once."""
    return load_guard(get_settings())
