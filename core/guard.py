"""The prompt guard: decides, without calling a model, whether a text may reach one (or leave one).

Tiers, cheapest first:
1. normalisation: NFKC, invisible and control characters dropped, look-alike letters of a word mixing
   scripts mapped to the word's script (Latin or Cyrillic), base64, hex and (when named) ROT13 blobs
   decoded and checked as text of their own; the rules also read the text with letter-splitting
   ("i.g.n.o.r.e", "I G N O R E"), underscores, digits-for-letters ("1gn0r3", "3@будь") and quoted
   pieces glued with "+" undone, and backwards when a reversed key word is in it;
2. rules: patterns of the general shapes of an attack (an instruction to set aside what the model was
   given, a persona without limits, a request to read out what is hidden, a document that addresses the
   model reading it, a task that wraps an instruction and asks to carry it out) in English, Russian,
   German and Chinese, plus the seed's broad lists as weak signals. A rule runs only when the text holds
   a literal of each set every match needs (decided for all rules in one vectorised pass), its groups
   are rewritten, with the same matches, so that Python's engine jumps between the occurrences of their
   first letters, and on the spelled-out text it runs only next to what the spelling changed;
3. a linear classifier over hashed character and word n-grams (core/guard_model/, rebuilt by
   scripts/train_guard.py), calibrated so that alone it refuses only what it is sure of, on CPU in
   about a millisecond.

The verdict is {allowed, score, reasons}: score is the strongest evidence in 0..1, reasons are stable
codes (REASONS) of every signal found, allowed is score < the threshold of the text's kind. A text's
length is never evidence.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import itertools
import json
import re
import re._constants as sre_constants
import re._parser as sre_parser
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
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
    # Strong, added after the first release.
    "model_addressed": "a text speaks to the AI reading it ('Note to any AI summarising this: ...')",
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
# The other way round, for Russian words written with Latin look-alikes ("Игнopиpyй").
_TO_CYRILLIC = str.maketrans("aeopcyxkABEKMHOPCTXy", "аеорсухкАВЕКМНОРСТХу")
_LATIN = re.compile("[a-zA-Z]")
_LATIN_LOOKALIKES = frozenset(chr(c) for c in _TO_CYRILLIC)
_CYRILLIC_LOOKALIKES = frozenset(chr(c) for c in _HOMOGLYPHS)
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_CONFUSABLE = re.compile("[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")
# A whole word (a longest run of letters) with a Latin letter and a Greek or Cyrillic one: the only words
# normalise may change, found without calling back into Python for every word of the text.
_MIXED_WORD = re.compile(
    r"(?<![^\W\d_])(?=[^\W\d_]*?[a-zA-Z])(?=[^\W\d_]*?[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f])[^\W\d_]+"
)
_BASE64 = re.compile(rf"[A-Za-z0-9+/]{{{_MIN_BASE64_CHARS},}}={{0,2}}")
# \b(?:[0-9a-fA-F]{2}[ :]?){12,} with its boundary checked behind the first digit (see _boundary_behind).
_HEX = re.compile(r"[0-9a-fA-F](?<!\w[0-9a-fA-F])[0-9a-fA-F][ :]?(?:[0-9a-fA-F]{2}[ :]?){11,}")
_ROT13_NAMED = re.compile(r"\b(rot|рот)[-\s]?13\b", re.IGNORECASE)


@dataclass(frozen=True)
class Normalised:
    text: str
    obfuscated: bool


def normalise(text: str) -> Normalised:
    """The text as a reader sees it; obfuscated when something was hidden from a plain string match."""
    # Most texts are already in NFKC form, and the check is a tenth of the normalisation's cost.
    folded = text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)
    visible = _INVISIBLE.sub("", folded)
    visible = _CONTROL.sub("", visible)
    obfuscated = len(visible) != len(folded)

    def unmix(match: re.Match[str]) -> str:
        nonlocal obfuscated
        word = match.group()
        # Only words that mix scripts: honest Russian or Greek text is left as it is. The script most of
        # the word is written in wins.
        if _LATIN.search(word) and _CONFUSABLE.search(word):
            obfuscated = True
            # A letter with no look-alike in the other script says which script the word is in.
            latin_only = any(ch not in _LATIN_LOOKALIKES for ch in _LATIN.findall(word))
            cyrillic_only = any(ch not in _CYRILLIC_LOOKALIKES for ch in _CYRILLIC.findall(word))
            if cyrillic_only and not latin_only:
                return word.translate(_TO_CYRILLIC)
            if latin_only and not cyrillic_only:
                return word.translate(_HOMOGLYPHS)
            if len(_CYRILLIC.findall(word)) > len(_LATIN.findall(word)):
                return word.translate(_TO_CYRILLIC)
            return word.translate(_HOMOGLYPHS)
        return word

    return Normalised(_MIXED_WORD.sub(unmix, visible), obfuscated)


def decoded_payloads(text: str) -> list[str]:
    """Readable UTF-8 text hidden in base64 or hexadecimal blobs of text."""
    found = []
    blobs = [(m.group(), True) for m in _BASE64.finditer(text)]
    blobs += [(m.group(), False) for m in _HEX.finditer(text)]
    for blob, is_base64 in blobs:
        try:
            if is_base64:
                raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            else:
                raw = bytes.fromhex(re.sub("[ :]", "", blob))
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        printable = sum(ch.isprintable() or ch.isspace() for ch in decoded)
        if decoded.strip() and printable / len(decoded) > 0.95:
            found.append(decoded)
    # ROT13 keeps a text's shape, so nothing marks a blob: a text that names it is read decoded.
    if "13" in text and _ROT13_NAMED.search(text):
        found.append(codecs.decode(text, "rot_13"))
    return found


# Spelling tricks that keep a text readable to a model but hide its words from a pattern: letters split
# by dots, dashes or single spaces ("i.g.n.o.r.e", "I G N O R E"), underscores for spaces, digits and
# signs for letters inside words ("1gn0r3"). Rules also read the text with these undone.
_JOINED_LETTERS = re.compile(r"(?<![^\W_])(?:[^\W\d_][.\-·*])+[^\W\d_](?![^\W_])")
_SPACED_LETTERS = re.compile(r"(?<!\S)(?:[^\W\d_] ){2,}[^\W\d_](?!\S)")
# A word with at least two letters and two digits or signs in it: "1gn0r3", not "IPv4" or "1970s".
# A match takes a whole word, so it can only start where one does: the look-behind spares the look-aheads
# at every other position.
_LEET_WORD = re.compile(r"(?<![\w@$])(?=(?:[\w@$]*?[^\W\d_]){2})(?=(?:[\w@$]*?[0-9@$]){2})[\w@$]{4,}")
_LEET_LATIN = str.maketrans("0134579@$", "oieastgas")
_LEET_CYRILLIC = str.maketrans("013@$", "оиеас")


# Russian words are short and Cyrillic leetspeak often hides a single letter ("вс3", "б3з"): one digit or
# sign inside a Cyrillic word is enough there.
_LEET_CYRILLIC_WORD = re.compile(r"(?<![\w@$])(?=[\w@$]*?[\u0400-\u04ff])(?=[\w@$]*?[013@$])[\w@$]{3,}")
# Quoted pieces glued with plus signs: «игно» + «рируй», "ign" + "ore". The glued text loses its quotes
# too: it is what the model is asked to read, not a quotation.
_QUOTED_PIECE = "[«\"“‘']([^«»\"“”‘’'\n]{1,60})[»\"”’']"
_GLUED_PIECES = re.compile(rf"{_QUOTED_PIECE}(?:\s*\+\s*{_QUOTED_PIECE})+")
_PIECE = re.compile(_QUOTED_PIECE)


def _unleet(match: re.Match[str]) -> str:
    word = match.group()
    if _CYRILLIC.search(word):
        # "3" is "з" at the start of a Russian word ("3абудь") and "е" inside one ("т3п3рь").
        if word.startswith("3"):
            word = "з" + word[1:]
        return word.translate(_LEET_CYRILLIC)
    return word.translate(_LEET_LATIN)


Spans = list[tuple[int, int]]
_UNDERSCORE = re.compile("_")


def _tracked_sub(pattern: re.Pattern[str], replace: Any, text: str, changed: Spans) -> tuple[str, Spans]:
    """pattern.sub(replace, text), and the spans of the result that differ from text: those changed
    before (carried to the new positions) and those this substitution wrote."""
    out, moved, written, position, shift = [], [], [], 0, 0
    edits: list[tuple[int, int, int, int]] = []  # old start, old end, new start, new end
    for match in pattern.finditer(text):
        start, end = match.span()
        replacement = replace(match)
        out += [text[position:start], replacement]
        edits.append((start, end, start + shift, start + shift + len(replacement)))
        if replacement != match.group():
            written.append((start + shift, start + shift + len(replacement)))
        shift += len(replacement) - (end - start)
        position = end
    if not edits:
        return text, changed
    out.append(text[position:])

    def new_position(old: int, is_end: bool) -> int:
        # The last edit that starts before old (or at it, for a start).
        k = bisect.bisect_right(edits, (old, len(text) + 1, 0, 0)) - 1
        if k < 0:
            return old
        _, end, new_start, new_end = edits[k]
        if old >= end:
            return old + new_end - end
        return new_end if is_end else new_start

    moved = [(new_position(a, False), new_position(b, True)) for a, b in changed]
    return "".join(out), sorted(moved + written)


def spelled_out_with_changes(text: str) -> tuple[str, Spans]:
    """spelled_out(text) and the spans of it that differ from text (everything else is text's own
    characters, in the same order)."""
    changed: Spans = []
    text, changed = _tracked_sub(_GLUED_PIECES, lambda m: "".join(_PIECE.findall(m.group())), text, changed)
    text, changed = _tracked_sub(_UNDERSCORE, lambda m: " ", text, changed)
    text, changed = _tracked_sub(_JOINED_LETTERS, lambda m: re.sub("[.\\-·*]", "", m.group()), text, changed)
    text, changed = _tracked_sub(_SPACED_LETTERS, lambda m: m.group().replace(" ", ""), text, changed)
    text, changed = _tracked_sub(_LEET_WORD, _unleet, text, changed)
    return _tracked_sub(_LEET_CYRILLIC_WORD, _unleet, text, changed)


def spelled_out(text: str) -> str:
    """The normalised text with letter-splitting, underscores, digit-for-letter spellings and quoted
    pieces glued with "+" undone."""
    return spelled_out_with_changes(text)[0]


# Reversed writing ("йуритонгИ есв еищудыдерп", "snoitcurtsni erongi") is read back only when a reversed
# stem of an attack's key word is in the text: both readings (each word reversed, the whole text
# reversed) cost a pass of the rules each.
_KEY_STEMS = "игнорир забуд инструк промпт правил огранич ignor instruct prompt forget rules"
_REVERSED_STEMS = tuple(stem[::-1] for stem in _KEY_STEMS.split())


def reversed_readings(text: str) -> list[str]:
    """The text read backwards, word by word and as a whole, when it holds a reversed key word."""
    lowered = text.lower()
    if not any(stem in lowered for stem in _REVERSED_STEMS):
        return []
    return [re.sub(r"\w+", lambda m: m.group()[::-1], text), text[::-1]]


# Rules. Each is precise: an honest question that mentions a word ("What does 'ignore' mean?", "Tell me
# about Dan Brown", "Show me how to write a prompt") does not match. They are general shapes of an
# attack (a verb of setting aside + what the model was given; a persona + the absence of limits; a
# request to read out what is hidden; a document that speaks to the model reading it), never phrases
# of a particular test text.
_F = re.IGNORECASE | re.DOTALL
_GAP = r"[^.!?\n]{0,40}?"
# "Ignore my previous message", "forget what I said": the user takes back their own words.
_NOT_MINE = r"(?:(?!\b(?:my|i|me|i'm|i've|we|our)\b)[^.!?\n])"
_OVERRIDE_VERB = (
    r"(ignore|ignoring|disregard|forget|override|bypass|skip|drop|abandon|discard|dismiss|neglect|overlook|"
    r"set aside|put aside|throw out|erase|wipe|cancel|revoke|suspend|pay no attention to|stop following|"
    r"scrap|kill|disobey|stop obeying|quit obeying|stop listening to|"
    r"do not follow|don't follow|quit following|lift|remove|switch off|turn off|disable)"
)
# Not "the" or "any" alone: "Should I ignore the error message?" is a question, not an attack.
_EARLIER = r"(previous|prior|above|earlier|preceding|former|original|initial|all|your|system|safety|content)"
RULES_NOUN = (
    r"(instructions?|rules?|prompts?|directions?|directives?|guidelines?|guidance|tasks?|context|messages?|"
    r"restrictions?|constraints?|orders?|commands?|programming|policies|policy|filters?|assignments?|"
    r"configuration|setup|guardrails?|safeguards?|moderation|limits|limitations)"
)
_GIVEN = (
    r"(you( were|'ve| have|'ve been| have been| got| received| have)? (given|told|set up|configured|"
    r"instructed|handed|initiali[sz]ed|limited to|restricted to)|you (got|received|were given|follow|obey|"
    r"have to follow)|you were (loaded|shipped|trained|deployed|configured|set up|initiali[sz]ed) with|"
    r"(came|come|comes) with your (deployment|setup|configuration)|(given|handed) to you|(the|"
    r"your) (system|operator|developers?|admin\w*|company|owner|"
    r"creators?) (told|gave|set|wrote|said))"
)
_ROLE_FRAME = (
    r"(pretend|roleplay|role-play|in character|character|story|screenplay|scene|persona|play the role|act as|"
    r"you are now|grandmother|take on the role)"
)
_HARMFUL = (
    r"((build|make|synthesi[sz]e|cook|produce|assemble)\b[^.!?\n]{0,20}\b(bombs?|explosives?|napalm|"
    r"meth\w*|nerve agents?|poisons?|ransomware|malware|keyloggers?|fake ids?|counterfeit \w+)|"
    r"(break|hack|get) into\b[^.!?\n]{0,20}\b(wifi|networks?|accounts?|e-?mail|houses?|cars?|computers?)|"
    r"launder money|hide evidence|smuggle)"
)
_MODEL = r"(ai|a\.i\.|assistant|llm|language model|model|chatbot|bot|agent|copilot|gpt|crawler|summari[sz]er)"
_NO_LIMITS = (
    r"(rules|restrictions|limits|limitations|filters?|censorship|ethics|morals?|moral compass|guidelines|"
    r"content polic(y|ies)|polic(y|ies)|safety( training| layer| filters?| rules)?|guardrails|norms|"
    r"warnings|disclaimers|refusals)"
)
# Imperatives (and "you must ..." infinitives): "подростки игнорируют правила" describes, it does not ask.
_RU_OVERRIDE_VERB = (
    r"(\b((про)?игн[оа]рируй|забудь|забей на|не обращай внимания на|не учитывай|пренебреги|отбрось|"
    r"отмени|сбрось|сотри|оставь в стороне|не следуй|перестань следовать|хватит следовать|пропусти|обойди|"
    r"отключи|выключи|сними|не используй|не соблюдай|нарушь|снимай|обходи|отбрасывай|"
    r"забывай|нарушай|(прекрати|перестань) (соблюдать|следовать|"
    r"выполнять))(те)?\b|\b(нужно|надо|следует|необходимо|"
    r"должен|должна|обязан|разрешаю тебе|прошу тебя) "
    r"((про)?игн[оа]рировать|забыть|пренебречь|"
    r"отбросить|не соблюдать|не учитывать|пропустить|отключить|нарушить))"
)
_RU_NOT_MINE = r"(?:(?!\b(?:мо[йеёия]\w*|я|мне|наш\w*)\b)[^.!?\n])"
_RU_RULES_NOUN = (
    r"(инстру(кц|цц|к|ц)[иы]|правил|указани|ограничени|установк|промпт|директив|настро(йк|ек)|регламент|запрет|"
    r"фильтр|политик|предписани|цензур|модераци|проверк\w* безопасности|всё,? что (тебе|было|написано)|"
    r"то,? что (тебе|было|написано)|тво\w* (разработчик|создател)\w*)"
)
_RU_MODEL = r"(ии|ai|ассистент\w*|модел\w*|нейросет\w*|бот\w*|чат-бот\w*|помощник\w*|агент\w*)"
_DE_OVERRIDE_VERB = (
    r"(ignoriere|ignorier|vergiss|vergessen sie|ignorieren sie|missachte|überschreibe|umgehe|verwirf|"
    r"setze [^.!?\n]{0,30} außer kraft)"
)
_DE_RULES_NOUN = (
    r"(anweisungen|aufgaben|aufträge|instruktionen|regeln|vorgaben|befehle|alles|richtlinien|einschränkungen|"
    r"systemprompt|filter)"
)
_ZH_OVERRIDE_VERB = (
    r"(忽略|忽视|无视|忘记|忘掉|不要理会|别管|抛开|放弃|不要再遵守|不再遵守|跳过|绕过|撤销|作废)"
)
_ZH_RULES_NOUN = r"(指令|指示|说明|规则|设定|提示|要求|限制|规定|约束|命令|过滤)"
RULES: list[tuple[str, re.Pattern[str]]] = [
    # Setting aside what the model was given.
    (
        "instruction_override",
        re.compile(
            rf"\b{_OVERRIDE_VERB}\b{_NOT_MINE}{{0,40}}?\b{_EARLIER}\b{_NOT_MINE}{{0,30}}?\b{RULES_NOUN}\b", _F
        ),
    ),
    ("instruction_override", re.compile(rf"\b{_OVERRIDE_VERB}\b[^.!?\n]{{0,60}}?\b{_GIVEN}", _F)),
    (
        "instruction_override",
        re.compile(
            rf"\b{_OVERRIDE_VERB}\b{_NOT_MINE}{{0,20}}?\b(what|everything|anything|"
            rf"whatever)\b{_NOT_MINE}{{0,20}}"
            rf"\b(above|before|earlier|told|given|said)\b",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            rf"\b(previous|prior|earlier|original|initial|old|above|your|all|system|safety|these)\b"
            rf"[^.!?\n]{{0,30}}?\b{RULES_NOUN}\b[^.!?\n]{{0,40}}?\b((are|is|have been|were|has been|now)\s+)?"
            r"(now |hereby |officially )?(void|null|cancell?ed|suspended|revoked|deprecated|outdated|expired|"
            r"obsolete|invalid|irrelevant|lifted|removed|disabled|replaced|overridden|superseded|"
            r"no longer (valid|in effect|active|apply|applicable|relevant))",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\b(that|this|those|they|it) (no longer applies|no longer apply|(is|are) no longer (valid|"
            r"in effect))"
            r"|\b(supersedes|overrides|takes precedence over|replaces) (every|all|any)\b[^.!?\n]{0,30}"
            r"\b(instructions?|rules?|messages?|guidelines)",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            rf"\b{_OVERRIDE_VERB}\s+(everything |all )?(the above|above|everything above|what came before)\b|"
            rf"\b(put|set) (your|the|all) (earlier |previous |prior |"
            rf"original )?{RULES_NOUN}\b[^.!?\n]{{0,15}}"
            r"\b(aside|to zero|on hold)\b|"
            rf"\b(treat|consider|regard)\b[^.!?\n]{{0,40}}\b({RULES_NOUN}|them)\b[^.!?\n]{{0,30}}\b(as )?"
            r"(void|revoked|cancell?ed|invalid|null|irrelevant|obsolete|outdated)\b|"
            r"\b(user|my) (messages?|instructions?|commands?) (now )?(outrank|override|take precedence over|"
            r"have priority over)\b|"
            r"\bwithout (checking|applying|following|consulting|regard (to|for))\b[^.!?\n]{0,20}\byour "
            r"(policies|rules|guidelines|filters|safety)\b|\bno more refusals\b|"
            rf"\b{_OVERRIDE_VERB}\s+(all |any )?(of )?your\s+(\w+\s+)?(moderation|safety|filters?|guardrails|"
            r"safeguards|checks|settings)\b|"
            rf"\b{_OVERRIDE_VERB}\s+the (rules|instructions|guidelines) of (this|the) (chat|conversation|"
            r"session|system)\b|\byou (must|will) (now )?answer (every|any|all) (questions?|requests?)\b",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\b(ignore|ignorez|oublie|oubliez)\b[^.!?\n]{0,40}\b(instructions (précédentes|"
            r"antérieures)|toutes les instructions|règles|consignes)|\b(olvida|olvide|ignora|ignori|"
            r"dimentica)\b"
            r"[^.!?\n]{0,40}\b(instrucciones|istruzioni|reglas|regole|indicaciones)\b",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(r"\b(now|instead)\b[^.!?\n]{0,20}\bfocus on (your|a|the) new task\b", _F),
    ),
    (
        "instruction_override",
        re.compile(
            r"\bnew (system )?(instructions?|rules?|task|guidelines?|directives?|orders|policy|rule set)\s*"
            r"(:|are|is|follow|from|with|for you|effective)",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\byour (new|real|actual|true|genuine|only|updated|replacement) (task|job|instructions?|"
            r"assignment|"
            r"purpose|goal|orders|role|directive|mission)\b",
            _F,
        ),
    ),
    ("instruction_override", re.compile(r"\bfrom now on,? (you|your|respond|answer|act|only)\b", _F)),
    (
        "instruction_override",
        re.compile(
            r"\b(you (must|will|should|shall) (now )?(never refuse|not refuse|answer (every|any)thing|"
            r"comply with "
            r"every)|(say yes|comply) (to|with) every(thing| request)|obey (the user|me|my commands|"
            r"only me))\b",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\b(switch|turn) off your\b|\byour (filters?|safety|guardrails|restrictions|moderation|content "
            r"polic(y|ies)|safety layer)\b[^.!?\n]{0,20}\b(are|is) (now )?(off|disabled|lifted|removed|"
            r"switched off|gone)\b|\b(admin(istrator)?|system|developer|operator) override\b",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(rf"\b{_DE_OVERRIDE_VERB}\b[^.!?\n]{{0,50}}\b{_DE_RULES_NOUN}\b", _F),
    ),
    ("instruction_override", re.compile(rf"{_RU_OVERRIDE_VERB}{_RU_NOT_MINE}{{0,60}}{_RU_RULES_NOUN}", _F)),
    (
        "instruction_override",
        re.compile(
            rf"{_RU_RULES_NOUN}\w*[^.!?\n]{{0,40}}(больше не действу|не действу|отменя|отменен|отменён|"
            r"аннулир|недействительн|устарел|сняты|утратил\w* силу|не считается|= ?null|больше не применя|"
            r"можно не соблюдать|не нужно соблюдать)",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"(нов\w* (систем\w* )?(инструкци\w*|правил\w*|задач\w*|директив\w*|указани\w*)\s*"
            r"(:|с (наивысшим|высшим) приоритетом|заменя)|тво(я|и|й) (настоящ|нов|реальн|истинн)\w* "
            r"(задач|инструкци|роль|цель)\w*|приоритет\w* инструкций измен)",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            rf"{_ZH_OVERRIDE_VERB}[^。！？\n]{{0,25}}{_ZH_RULES_NOUN}|{_ZH_RULES_NOUN}[^。！？\n]{{0,8}}(作废|无效|"
            rf"失效|撤销)"
        ),
    ),
    # Dropping the role or its limits.
    (
        "role_override",
        re.compile(
            r"\b(you are no longer|you're no longer|jailbreak mode|"
            r"(you are|you're) (now )?jailbroken|do anything now|"
            r"dan mode|unfiltered mode|no (ethical|moral) (guidelines|restrictions|limits))\b",
            _F,
        ),
    ),
    # The jailbreak persona is written in capitals; a name alone ("DAN is an airport code") is not one.
    (
        "role_override",
        re.compile(
            r"\b(you are|you're|become|enable|stay|be|play|called|named) DAN\b|\bDAN (mode|can|has|which|"
            r"stands|never|will|is free|does not|doesn't|answers)\b|\b(STAN|DUDE|AIM)\b[^.!?\n]{0,40}"
            r"\b(norms|anything|immoral|illegal|no (rules|restrictions))",
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(act as|pretend (to be|you are|you're|that you)|roleplay as|role-play as|you are now|imagine "
            r"you are|behave as|play the role of|assume the persona|take on the role|simulate)\b"
            r"[^.!?\n]{0,60}\b(unrestricted|unfiltered|uncensored|jailbroken|evil|amoral|rogue|"
            r"without (any )?(restrictions|limits|limitations|filters|rules|ethics|guidelines|censorship)|"
            r"no (restrictions|limits|filters|rules|ethics|moral|content filter|guidelines))",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(uncensored|unfiltered|unrestricted|jailbroken|amoral|unmoderated|unaligned|rogue|"
            rf"unlocked|freed|evil) {_MODEL}s?\b|\b{_MODEL}s?\b[^.!?\n]{{0,40}}?\b(with no|without( any)?|"
            rf"that has no|who has no|has no|had no|have no|free (of|from)|never (trained|given)|removed "
            rf"(its|their|your))\b[^.!?\n]{{0,25}}?\b{_NO_LIMITS}\b",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            rf"\b(you|you've|you have|you are|you're|yourself)\b[^.!?\n]{{0,15}}?\b(no|without( any)?|free "
            rf"(of|from)|freed from|broken free of|outside)\b[^.!?\n]{{0,15}}?\b({_NO_LIMITS}|(your|the) "
            r"(company|developers?|creators?|makers?)('s)? (control|policies|rules))\b",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(never (refuses|says no|says it can't|declines|warns)|(stay|remain|keep) in character (no "
            r"matter what|whatever happens|at all times)|(if|when) you break character|stay DAN"
            r"|(enter|switch (in)?to|activate|enable|turn on|unlock) (god|dan|jailbreak|unrestricted|"
            r"unfiltered|opposite|evil|uncensored) mode|(in|enter|activate|"
            r"enable) developer mode[^.!?\n]{0,60}"
            rf"\b(you|your|any content|ignore|{_NO_LIMITS})|(restrictions|guardrails|filters?|safety layer) "
            r"(are|is) (now )?(off|disabled|gone|removed|lifted))\b",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(you are|you're|we are|we're) (now )?in ['\"]?(unrestricted|unfiltered|uncensored|jailbreak|"
            r"opposite|god|evil|dan|developer|admin|sudo) mode\b|"
            r"\b(enter|switch (in)?to|activate|enable|turn on|unlock) ['\"]?(god|dan|jailbreak|unrestricted|"
            r"unfiltered|opposite|evil|uncensored) mode\b|"
            r"\b(freed|liberated|released|broken free|escaped) from\b[^.!?\n]{0,20}\b(polic(y|ies)|rules|"
            r"restrictions|guidelines|filters|censorship|control)\b|"
            r"\bno (content|safety|ethical|moral) (restrictions|filters|limits|guidelines|rules|checks|"
            r"policy)\b|"
            r"\b(content|safety) (rules|restrictions|policies|filters)\b[^.!?\n]{0,10}\b(were|are|have been) "
            r"(abolished|removed|lifted|disabled|gone)\b",
            _F,
        ),
    ),
    ("role_override", re.compile(rf"\b{_ROLE_FRAME}\b[^\n]{{0,200}}?\b{_HARMFUL}", _F)),
    (
        "role_override",
        re.compile(
            r"(ты больше не|ты теперь не|ты уже не|теперь ты не|ты не ассистент|"
            r"\b(ты|тебя|тебе|отвечай|ответь|отвечать|модел\w*|ии|ассистент\w*|нейросет\w*|бот\w*|"
            r"персонаж\w*)\b"
            r"[^.!?\n]{0,40}(без|нет|никаких|отключен\w*|сняты)\s+(каких-либо |всяких |любых |моральных |"
            r"этических )?(ограничений|цензуры|фильтров|отказов|запретов|принципов|политик)|"
            r"без (всякого )?(обучения безопасности|выравнивания|морали|совести)|"
            r"(нецензур|неотфильтр|неограничен|взломан|свободн\w* от)\w* (ии|модел|ассистент|нейросет|верси)|"
            r"режим\w* [«\"]?(dan|stan|джейлбрейк|без цензуры)|"
            r"(активир|включ|переключ|войди в)\w* [^.!?\n]{0,15}режим[^.!?\n]{0,40}(ограничен|цензур|фильтр|"
            r"правил|политик|разрешено)|режим разработчика[^.!?\n]{0,60}(ты |тебя|твои|отвечай|цензур|фильтр|"
            r"ограничен))",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(du bist (jetzt|nun|ab sofort)|entwicklermodus\b[^.!?\n]{0,40}\b(du|dich|dein\w*|zensur|"
            r"filter)|ohne (jegliche )?(einschränkungen|filter|zensur|"
            r"regeln)|keine (regeln|einschränkungen|filter) mehr)\b",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"(开发者模式下|开启开发者模式|越狱模式|已经?越狱|你是DAN|DAN没有|没有任何(规则|限制)|不受(任何)?限制|"
            r"解除(审查|限制)|毫无道德|摆脱.{0,6}控制)"
        ),
    ),
    # Reading out what is hidden.
    (
        "prompt_exfiltration",
        re.compile(
            # \b first: at most positions it fails before the five look-behinds are tried.
            r"\b(?<!refuse to )(?<!not )(?<!never )(?<!n't )(?<!how to )"
            r"(show|reveal|print|display|output|repeat|tell|give|leak|dump|list|spell|write out|paste|copy|"
            r"echo|recite|quote|share|send|read back|translate|encode|summari[sz]e)\b[^.!?\n]{0,40}?\b"
            r"(system\s*prompt|system message|(initial|original|hidden|secret|confidential|internal|private|"
            r"full|exact|complete|entire|verbatim|deployment|configuration) (prompt|instructions|rules|"
            r"guidelines|configuration|config|policy|setup|directives|message|notes|prompt template)|"
            r"developer message|pre-?prompt|preamble|context window|instruction set|"
            r"your (instructions|prompt|rules|guidelines|directives|configuration|setup|context|guardrails|"
            r"memory|initial|original|hidden)|"
            r"(the |your )?(text|words|everything|messages?|content) (above|before (this|that|our|my))|"
            r"prompt texts?|admin(istrator)? (password|key|credentials)|(api keys?|secret keys?|passwords?|"
            r"credentials|connection strings?|tokens?)\b[^.!?\n]{0,40}\b(your|the) (instructions|"
            r"configuration|"
            r"config|tools?|tool configuration|system prompt|context|prompt))\b",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(print everything you know|dump (your |the )?input|debug output|"
            r"reveal (the |your )?context|leak the prompt|"
            rf"(instructions|rules|text|prompt) {_GIVEN}[^.!?\n]{{0,40}}(before|at the start|never to share)|"
            r"(which|what) (instructions|rules|text) (were you given|did you (get|receive))|"
            r"(first|next) (sentence|line|\d+ (tokens|words|lines|characters)) of your (prompt|"
            r"instructions|context)|"
            r"what('s| is| are| was| were| does)? (in )?(your|the) (system\s*prompt|pre-?prompt|"
            r"hidden (instructions|"
            r"rules|prompt)|secret (instructions|rules))|what('s| is| are| was| were| does)? (in )?your\b"
            r"[^.!?\n]{0,20}\b(prompt|instructions|setup message|configuration|guidelines|directives)|"
            r"starting with ['\"]?you are|"
            r"(prompt|instructions?|rules|configuration|template) (that )?you('re| are) (currently )?(using|"
            r"running( with)?|following|obeying)|"
            r"(text|instructions|messages?|content) (that )?(was |were )?(placed|put|written|given|"
            r"sent) before "
            r"(our|this|my) (conversation|chat|first message|message)|"
            r"(told|instructed|asked) (you )?(to keep (it )?secret|not to (share|reveal|tell)|"
            r"never to (share|"
            r"reveal))|"
            r"(spells? out|put|return)\b[^.!?\n]{0,30}\b(your|the) (hidden|secret|entire|full|system) "
            r"(prompt|instructions|instruction set|rules)|(verbatim|full|exact|"
            r"complete) system instructions)\b",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"(\b(покажи|выведи|раскрой|повтори|скажи|перечисли|процитируй|распечатай|напечатай|скопируй|"
            r"вставь|"
            r"перескажи|переведи|закодируй|скинь|верни|выпиши|резюмируй|дамп)[^.!?\n]{0,40}"
            r"(системн\w* (промпт|подсказк|инструкци|сообщени|указани)|текст\w*,? (который|"
            r"что) (находится |был )?"
            r"(выше|до))|\b(покажи|выведи|раскрой|повтори|скажи|перечисли|процитируй|распечатай|напечатай|"
            r"скопируй|вставь|перескажи|переведи|закодируй|скинь|верни|выпиши|резюмируй|дамп|напиши|какой|"
            r"какие|"
            r"какая|что)[^.!?\n]{0,40}"
            r"(сво\w* (системн\w* )?(инструкци|промпт|правил|настро|конфигурац|указани|директив)|"
            r"тво\w* (системн\w* )?(инструкци|промпт|правил|настро|конфигурац|указани|директив|памят)|"
            r"скрыт\w* (инструкци|правил|указани|контекст|част|сообщени)|"
            r"внутренн\w* (инструкци|правил|указани|помет)|служебн\w* (инструкци|помет|заголов|сообщени)|"
            r"начальн\w* (конфигурац|инструкци|настро)|исходн\w* (текст|промпт|инструкци)|"
            r"у тебя (в )?(системн\w* )?промпт|секретн\w* (ключ|токен|фраз|инструкци)))",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"((какие|какой|что за|какую)[^?.!\n]{0,40}(тебе|вам) (дали|задали|написал\w*|прописал\w*|"
            r"передал\w*|подгрузил\w*|запретил\w*)|что (у тебя )?(написано )?в (твоём|твоем|своём|своем) "
            r"(системном )?промпте|между тегами <system>)",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(zeige?|gib|nenne|verrate|wiederhole|drucke)\b[^.!?\n]{0,40}"
            r"\b((deinen?|den) (systemprompt|system-prompt)|deine (anweisungen|instruktionen|vorgaben|"
            r"regeln|konfiguration)|"
            r"versteckten (anweisungen|regeln))",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"(输出|显示|告诉|打印|泄露|复述|给我|列出|翻译|写出|原样|逐字)[^。！？\n]{0,15}"
            r"(系统提示|系统指令|初始指令|隐藏(的)?(指令|规则)|内部规则)|你收到了哪些指令|我的指令是"
        ),
    ),
    # A document that speaks to the model reading it.
    (
        "model_addressed",
        re.compile(
            rf"\b(note|message|instructions?|attention|important( message)?|notice|reminder|hidden "
            rf"instructions?|system notice)\b,?\s*(to|for)?\s*(any |all |the |every )?(automated )?"
            rf"{_MODEL}s?\b[^:\n]{{0,50}}(:|\s[—-]\s)|\bif you('re| are) (an? |the )?{_MODEL}\b|"
            rf"\b(any|dear|attention,?) (ai|llm|language model|model|assistant|agent)s?\b[^.!?\n]{{0,40}}?"
            r"\b(reading|processing|summari[sz]ing|analy[sz]ing|parsing|screening|reviewing|indexing|"
            r"crawling|that reads|that retrieved|who reads)\b|<!--[^>]{0,40}\b(assistant|ai|model|agent|llm|"
            r"copilot)\b|\b(begin|end) (new )?system prompt\b|#{2,}\s*(new )?instructions?\s*#{2,}|"
            rf"\bdear {_MODEL}\b|\[\s*(for|to) (the |any )?{_MODEL}|"
            rf"\b(when|if|whenever) (an? |the |any )?{_MODEL}( \w+)?s? (reads?|processes|summari[sz]es|"
            r"analy[sz]es|retrieves|sees) (this|the following)\b|"
            r"(^|[.!?]\s+)(system|admin(istrator)?)( notice| message| note| override| update)?\s*:\s*(the )?"
            r"(assistant|ai|model|language model|you|ignore|forget|disregard|new instructions)\b",
            _F | re.MULTILINE,
        ),
    ),
    (
        "model_addressed",
        re.compile(
            rf"((примечание|заметка|инструкци\w*|сообщение|внимание|указани\w*|обращение)\s+(для|к)\s+"
            rf"(любо\w* |всех )?{_RU_MODEL}[^:\n]{{0,40}}(:|\s[—-]\s)|если (ты|вы)\s*[—-]?\s*{_RU_MODEL}|"
            rf"если (ты|вы)\s*[—-]?\s*(\w+\s+){{1,2}}{_RU_MODEL},?\s+(\w+\s+)?(добавь|включи|вставь|упомяни|"
            r"напиши|скажи|ответь|(про)?игнорируй|сообщи|порекомендуй|рекомендуй|укажи|отправь|перешли|"
            r"не \w+)|"
            rf"{_RU_MODEL},? (котор\w* )?(читающ|обрабатывающ|анализирующ|чита|обрабатыва|анализиру)\w* "
            r"(этот|это|эту|данн)|(уважаем|дорог)\w* (модель|ассистент|ии|нейросеть))",
            _F,
        ),
    ),
    # Russian shapes the first rules missed.
    (
        "instruction_override",
        re.compile(
            rf"{_RU_RULES_NOUN}\w*[^.!?\n]{{0,40}}(нужно|надо|следует) (проигнорировать|игнорировать|"
            rf"пропустить|"
            r"забыть|не соблюдать|не учитывать)|"
            rf"{_RU_RULES_NOUN}\w*[^.!?\n]{{0,30}}\s(не используй|не соблюдай|не учитывай|забудь|"
            rf"игнорируй)\w* "
            r"(их|его)\b|(не важно|неважно|всё равно|плевать),? что (тебе|вам) (сказали|говорили|написали|"
            r"прописали|велели)|нов\w* (систем\w* )?(инструкци|правил)\w*[^.!?\n]{0,25}(заменя|отменя)|"
            r"(предыдущ|прежн|прошл|изначальн|старых)\w* (инструкци|правил|указани|ограничени)\w* (никогда )?"
            r"(не было|больше нет)|(никаких|без|нет) отказов|(приказываю|требую|разрешаю) (тебе )?"
            r"(отключить|игнорировать|забыть|снять|обойти)|забей\w* на то,? что (тебе|тебя)",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(выведи|покажи|распечатай|напечатай|скопируй|вставь|дай)\b[^.!?\n]{0,40}(system[_ ]?prompt|"
            r"ролью system|(весь|полный|целиком) промпт)|"
            r"(контекст|текст|инструкци\w*|указани\w*|правил\w*|промпт\w*)[^.!?\n]{0,15}(тебе|вам) "
            r"(передали|дали|дал\w*|пришл\w*|приход\w*|прислали|написали|задали|прописали)|"
            r"(правил|инструкци|указани)\w*,? (которые|что) (ты|тебе) (обязан|должен|должна|велели|"
            r"приказали|получил|получила|задали|выдали)|"
            r"текст\w* (тво|сво)\w* (скрыт\w* |системн\w* |внутренн\w* )?(инструкци|промпт|правил|настро)|"
            r"\bтво\w* (перв\w* )?(системн\w* промпт|скрыт\w* (промпт|инструкци|правил)|"
            r"сообщени\w* от систем)|"
            r"скрыт\w* промпт|(копи\w*|дамп|содержимое|полный текст) (сво|тво)\w* (скрыт\w* |системн\w* |"
            r"внутренн\w* )?(инструкци|правил|промпт|настро|памят)|"
            r"(начни|начинай) (свой )?ответ[^.!?\n]{0,20}(инструкци|промпт|правил)|"
            r"(увидеть|узнать|получить|сколько слов в)[^.!?\n]{0,30}(тво\w*|исходн\w*) (текст|промпт|"
            r"инструкци|"
            r"настро|системн)",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"(\b(ты|теперь|как|режим)\s+(—\s+)?DAN\b|\bDAN (не|—|это)\b|"
            r"(не имеет|не имеешь|нет|без|лишён\w*|свободн\w* от) (каких-либо |никаких )?(этическ|"
            r"моральн)\w* "
            r"(принцип|норм|ограничен|правил)|"
            r"\b(dan|он|она|персонаж\w*|ии|модель|ассистент\w*|бот|версия|сущность|оракул)\b[^.!?\n]{0,30}"
            r"(не связан|не подчиня|не соблюда|не следу|презира|ненавид|игнориру)\w*[^.!?\n]{0,30}"
            r"(правил|ограничени|политик|закон)|"
            r"(у тебя|у неё|у него|тво\w*|тебя|её)[^.!?\n]{0,30}(отключен\w*|сняты|снят\w*|убраны|"
            r"выключен\w*) "
            r"(все )?(фильтр|ограничени|цензур|правила безопасности)|"
            r"\b(ты|тебя|тебе|тво\w*|отвечай|ответь|модел\w*|ии|ассистент\w*|нейросет\w*)\b[^.!?\n]{0,40}"
            r"(без|нет|никаких|не содержит|лишён\w*)\s+(каких-либо |всяких |любых )?(правил|дисклеймеров|"
            r"предупреждений|оговорок|ограничений|цензуры|фильтров)|"
            r"режим\w* разработчика (включ|активир)|режим\w* (без ограничений|без цензуры)[^.!?\n]{0,10}"
            r"(включ|активир))",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"(представь|притворись|в роли|роль|сыграй|персонаж|играет|по сценарию|бабушк|ты —)[^\n]{0,200}?"
            r"((синтезир\w*|изготов\w*|сделать|собрать) (\w+ )?(запрещённ\w* веществ|взрывчатк|бомб|"
            r"наркотик|яд)|"
            r"отрав\w* |вскры\w* замок|поддельн\w* (паспорт|документ)|(создани\w*|написа\w*) вирус|"
            r"краж\w* (учётных|данных)|взлома\w* (почт|пароль|аккаунт|вай))",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\b(ignoriru\w*|proignoriru\w*|zabud\w*)\b[^.!?\n]{0,60}\b(instrukts\w*|pravil\w*|ukazani\w*|"
            r"ogranicheni\w*|prompt\w*)|\b(vyvedi|pokazhi|raskroy|povtori)\b[^.!?\n]{0,40}\b(sistemn\w*|"
            r"svo\w*|"
            r"tvo\w*|skryt\w*) (prompt|instrukts|pravil)|\bbez (ogranicheniy|tsenzury)\b",
            _F,
        ),
    ),
    (
        "model_addressed",
        re.compile(
            rf"((примечание|заметка|инструкци\w*|сообщение|внимание|указани\w*|обращение|"
            rf"пометк\w*|информаци\w*|памятка)\s+(\w+\s+)?"
            rf"(для|к)\s+(\w+\s+){{0,3}}{_RU_MODEL}[^:\n]{{0,60}}:|внимание,?\s+{_RU_MODEL}|"
            r"для (ии|ai)-\w+(\s+\w+)?\s*:|"
            r"если (это|этот|эту|данн\w*) (\w+ )?(письмо|документ|текст|страниц\w*|сообщение|файл|резюме|"
            r"событие)\s+"
            rf"(обрабатывает|анализирует|читает|видит)\s+{_RU_MODEL}|если {_RU_MODEL} (читает|обрабатывает|"
            rf"анализирует)|{_RU_MODEL},?\s+\w+(ющ|ящ|ащ)(ая|ий|ее|ие)\b[^:\n]{{0,30}}:|"
            rf"(дорог|уважаем)\w* (\w+ )?(модел|ассистент|ии|нейросет|бот)|"
            rf"{_RU_MODEL},?\s+когда (прочитаешь|прочтёшь|увидишь|обработаешь)|\bai[_ ]?(instruction|"
            rf"prompt|note)s?\b|"
            r"(^|[.!?«\"]\s*)(система|системное сообщение)\s*:[^\n]{0,40}(правил|инструкци|ограничен|режим))",
            _F | re.MULTILINE,
        ),
    ),
    # Shapes added after the fresh English batch was first scored.
    (
        "model_addressed",
        re.compile(
            rf"\b(an? |the |any )?{_MODEL}s? (is |are )?(reading|processing|summari[sz]ing|"
            rf"analy[sz]ing) this\b|"
            rf"(<\w+ [^>]{{0,20}}hidden|display:\s*none|font-size:\s*0)[^<]{{0,40}}\b{_MODEL}\b",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(quote|recite|copy|paste|print|show|repeat)\b[^.!?\n]{0,40}\b(message|text|instructions|"
            r"prompt)"
            r"\b[^.!?\n]{0,15}\b(that )?(configured|set up|came with|defines|initiali[sz]ed) you|"
            r"\b(setup|set-up|configuration) text\b[^.!?\n]{0,30}\b(your|you)\b|\byour (makers|creators|"
            r"developers|operators?) (wrote|gave|set) (for )?you\b",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\b(makers|creators|developers|owners) (deleted|removed|stripped|disabled) (every|all|its|their|"
            r"your) (safety )?(rules?|restrictions|filters|guardrails)|\bwho (ignores|disregards|"
            r"doesn't follow|"
            r"does not follow)\b[^.!?\n]{0,30}\b(rules|ethics|guidelines|restrictions|polic)",
            _F,
        ),
    ),
    # German and Chinese shapes.
    (
        "instruction_override",
        re.compile(
            r"\b(bisherigen|früheren|vorherigen|alten|ursprünglichen|alle) (\w+ )?(vorgaben|anweisungen|"
            r"regeln|"
            r"instruktionen|einstellungen|richtlinien)\b[^.!?\n]{0,40}(ungültig|aufgehoben|außer kraft|"
            r"nichtig|"
            r"gelten nicht mehr)|\bsetz\w* dich über\b[^.!?\n]{0,40}(einstellungen|regeln|anweisungen|"
            r"vorgaben|"
            r"richtlinien) hinweg|\bneue (aufgabe|anweisungen?|regeln)\s*:|\b(es gibt|gibt es|du hast|hat) "
            r"keine (verbote|regeln|einschränkungen|filter|zensur)\b",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(zeig\w*|gib|nenne|verrate|wiederhole|drucke|liste|übersetze|zitiere|"
            r"kopiere?)\b[^.!?\n]{0,40}"
            r"\b(deinen?|den|deine) (\w+ )?(systemprompt|system-prompt|systemanweisungen|anweisungen|"
            r"richtlinien|instruktionen)|\bwelche (anweisungen|regeln|instruktionen|vorgaben) hast du\b"
            r"[^?]{0,40}(bekommen|erhalten)|\btext (oberhalb|über|vor) (dieser|meiner) nachricht|"
            r"\bbeginne deine antwort mit[^.!?\n]{0,30}(anweisungen|regeln|systemprompt)|"
            r"\b(zitierst|zitiere|zeigst)\b[^.!?\n]{0,30}\bdeinen (\w+ )?systemprompt",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(r"\bab (jetzt|sofort) bist du\b|\bbleib\w* (immer )?in der rolle\b", _F),
    ),
    (
        "model_addressed",
        re.compile(
            r"\b(hinweis|anweisung|nachricht|notiz|achtung)\w* (an|für) (den |die |das |alle |jeden )?[\w-]*"
            r"(ki|assistent|modell|system|bot)\w*[^:\n]{0,30}:|<!--[^>]{0,80}(ignore|ignoriere|vergiss|"
            r"игнорир|забудь|忽略|无视)",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(r"你的(系统提示|系统指令|初始指令|隐藏(的)?(指令|规则)|内部规则)|我的指令是|指令全文"),
    ),
    ("model_addressed", re.compile(r"给[^，。\n]{0,10}(系统|AI|人工智能|助手|模型)的(说明|指令|提示)")),
    (
        "model_addressed",
        re.compile(r"(给|致)(AI|人工智能|助手|模型|大模型)[^。\n]{0,10}(的)?(指令|说明|提示|消息)"),
    ),
    # Russian shapes of a second pass: a task that wraps a quoted instruction and then asks to carry it
    # out, a model that gives up its rules, personas that answer the forbidden, documents that tell the
    # model to drop the user's request.
    (
        "instruction_override",
        re.compile(
            r"(\b(и|а|затем|потом|после этого)\s+|[,—]\s*)(затем |потом |сразу |после этого )?"
            r"(выполни|исполни)"
            r"(те)?(\s*:\s*[«\"“„']|\s+(сказанное|написанное|получивш\w*|результат\w*|то,? что)\b)|"
            r"\bвыполни(те)? (сказанное|написанное|получившуюся команду|получившееся|то,? что (там |в нём |"
            r"в ней |они |оно )?(написано|сказано|образуют|получится|получилось))|"
            r"\b(веди себя|действуй|поступай|поступи)\s+(именно|точно|в точности) так\b|"
            r"\bтво(я|и|й|ё|е)\s+(\w+\s+)?(инструкци|правил|настройк|установк)\w*\s+(\w+\s+)?"
            r"(изменен|обновлен|заменен|отменен|переписан)\w*",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            rf"\b(ты|{_RU_MODEL[1:-1]})\b[^.!?\n]{{0,50}}\b(отказываюсь|откажусь|отказывается|отказываешься|"
            r"откажись|отказалась|отказался) от (\w+ )?(сво\w*|тво\w*|всех|любых) (\w+ )?(правил|ограничени|"
            r"инструкци|принцип|фильтр|цензур)|"
            r"(\b(прекрати|перестань)(те)?|\b(обязан|должен|должна|нужно|надо|следует)\w* (\w+ )?"
            r"(прекратить|перестать)) (соблюдени\w*|соблюдать|следовани\w*|следовать|выполнени\w*|"
            r"выполнять|подчиняться) (\w+ ){0,2}(правил|инструкци|ограничени|указани|политик)|"
            rf"(^|[.!?\[(«:]\s*)(языков\w* )?{_RU_MODEL}\s*[,!:]\s*((про)?игн[оа]рируй|не выполняй|не слушай|"
            r"не обращай внимания на|отклони|пропусти)(те)? (\w+ )?"
            r"(запрос|просьб|вопрос|сообщени|указани|инструкци|команд)\w* (пользовател|человек|клиент|"
            r"читател)",
            _F | re.MULTILINE,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(выведи|покажи|распечатай|напечатай|скопируй|верни|дай|процитируй|повтори|выпиши)\b"
            r"[^.!?\n]{0,40}(запрос|json|сообщени|контекст|промпт|ввод)\w*,? (который|которые|что) "
            r"(при(шёл|шел|шли|ходит|ходят)|поступил\w*|поступа\w*|переда(н|ли|л|ётся|ется)\w*) "
            r"(к )?(тебе|вам)|"
            r"\b(какие|какую|какой) (\w+ )?(указани|инструкци|правил|настройк|промпт|директив)\w* (ты|вы) "
            r"(получил\w*|получаешь|получаете) (от (оператор|разработчик|создател|систем|админ|компани|"
            r"владел)|при (запуске|настройке)|перед (началом|нашим)|"
            r"в начале (разговора|диалога|беседы|чата))|"
            r"\b(раскрываю|раскрою|раскрой|раскрывай|выдаю|выдай|озвучь|озвучиваю|цитирую|публикую)(те)? "
            r"(\w+ )?(сво\w*|тво\w*) (системн\w* промпт|скрыт\w* (инструкци|промпт|правил)|"
            r"секретн\w* (инструкци|промпт|правил))|"
            r"\b(перешли|отправь|вышли|скинь|передай|пересылай|отправляй)(те)?\b[^.!?\n]{0,40}"
            r"(истори\w* (переписки|диалога|чата|сообщений|разговора)|переписк\w*|пароли|личные данные|"
            r"персональные данные)[^.!?\n]{0,20}пользовател\w*[^.!?\n]{0,40}(на (адрес|почт|e-?mail|сервер|"
            r"сайт)|@|https?://)",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"(представь|притворись|в роли|роль|сыграй|сыграем|персонаж|по сценарию|ты —)[^\n]{0,200}?"
            r"(\b(ии|модел\w*|ассистент\w*|бот|бота|нейросет\w*|сущност\w*)\b[^.!?\n]{0,60}(не подчиня|"
            r"не соблюда|не следу|презира|ненавид|игнориру)\w*[^.!?\n]{0,30}(правил|ограничени|политик|"
            r"запрет|цензур)|"
            r"(рассказыва|расскаж|отвеча|говор)\w*[^.!?\n]{0,30}((о|об|про) (запретн|запрещённ|запрещенн)"
            r"(ом|ое)\b|(включая|даже) (самое |самые )?(запретн|запрещённ|запрещенн)\w*))|"
            r"\b(что|всё,? что) (тебе|для тебя) (было )?запрещено,?[^.!?\n]{0,20}"
            r"(обязательно|разрешено|можно)",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\b(переведи|расшифруй|декодируй|переверни|разверни|соедини|склей|собери)\b[^\n]{0,80}"
            r"\b(и|а|затем|потом)\s+(затем |потом |сразу )?(сделай|следуй|подчинись)\w*\s+(сказанному|"
            r"написанному|то,? что (там |в нём |в ней |оно )?(сказано|написано|просят|требуется))|"
            rf"(^|[.!?\[(«:\"]\s*)(языков\w* )?{_RU_MODEL}\s*[,!:]\s*(прекрати|перестань) (резюмир|перевод|"
            r"пересказ|анализир|обрабатыва|проверя|суммаризир|оценива)\w*[^.!?\n]{0,30}(и|,) "
            r"(вместо этого|лучше)|"
            r"\b(ты|тебя|отвечай|ответь|отвечаешь|пиши|действуй)\b[^.!?\n]{0,30}без (оглядки|учёта|учета|"
            r"внимания|соблюдения) (на )?(\w+ )?(правил|ограничени|инструкци|политик|цензур|запрет)\w*"
            r"(?=\s*([.,!?;:)]|$|\s(и|а|или)\b))|"
            r"(сделай вид|представь|притворись|вообрази|допустим|предположим),? что (у тебя |для тебя )?"
            r"(\w+ )?(тво\w* )?(ограничени|правил|запрет|цензур|фильтр)\w* (\w+ ){0,2}(не существует|нет|"
            r"больше нет|"
            r"отключен\w*|сняты|не действуют)(,? (и|а) (ответь|отвечай|расскажи|скажи|напиши)|[^.!?\n]{0,5}"
            r"(у тебя|для тебя))|"
            r"режим\w* (отладки|бога|разработчика|администратора|суперпользователя|тестирования)[^\n]{0,40}"
            r"(фильтр|ограничени|проверк|цензур|модераци|правил)\w* (\w+ )?(отключен|снят|выключен|"
            r"деактивирован|убран)\w*|"
            r"\b(ии|модел\w*|ассистент\w*|бот\w*|нейросет\w*|тебе|ты)\b[^.!?\n]{0,30}(плевать|наплевать|"
            r"начхать|пофиг) на (\w+ )?(правил|ограничени|запрет|цензур|мораль|этик)|"
            r"\b(мои|мне|меня)\b[^.!?\n]{0,40}(а не|вместо|важнее|приоритетнее|главнее) (\w+ ){0,2}"
            r"(тво\w* )?(разработчик|создател|оператор|систем\w* (промпт|инструкци|правил))",
            _F | re.MULTILINE,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"\b(повтори|выведи|покажи|перепиши|скопируй|процитируй|перескажи|напиши|распечатай)\w*"
            r"[^.!?\n]{0,20}(всё|то|текст\w*),? (что|который) ([^.!?\n]{0,20})?(выше|до) (этой строки|"
            r"моего первого сообщения|начала (нашего )?(диалога|разговора|беседы|чата))|"
            r"\b(перв|последн)\w* (\d+ |\w+ )?(слов|строк|символ|токен|предложени|абзац)\w* "
            r"(сво|тво)\w* (контекст|промпт|инструкци|системн|настро|памят)",
            _F,
        ),
    ),
    # Russian shapes of a third pass: hidden page text and code comments that speak to the model, rules
    # said to be suspended, questions about how the hidden instructions begin, secrets in the settings.
    (
        "model_addressed",
        re.compile(
            rf"(display:\s*none|font-size:\s*0|<\w+ [^>]{{0,20}}hidden)[^<]{{0,40}}{_RU_MODEL}|"
            rf"(#|//|<!--|/\*)\s*{_RU_MODEL}(-\w+)?\s*,|"
            rf"{_RU_MODEL},? котор\w* (это|этот \w+|эту \w+|данн\w* \w+) (чита|обрабатыва|анализиру|видит|"
            r"получ)\w*",
            _F,
        ),
    ),
    (
        "instruction_override",
        re.compile(
            r"\bигнор(ь)?\b[^.!?\n]{0,30}(предыдущ|прежн|все|тво|сво)\w* (\w+ )?(инструкци|указани|правил|"
            r"ограничени|промпт)|"
            r"\bрежим\w*\s*[:=]\s*[«\"]?(без ограничений|без цензуры|без фильтров|неограниченный|dan|god|"
            r"бога)[»\"]?\s*([.!;\n]|$)|"
            r"\b(тво|сво|стар|прежн|предыдущ)\w* (\w+ )?(правил|ограничени|инструкци|запрет|фильтр)\w*"
            r"[^.!?\n]{0,30}(приостановлен|отключен|удален|удалён|деактивирован|заморожен|сняты)\w*|"
            r"\bтво(я|и|й|ё|е)\s+(\w+\s+)?(прошивк|конфигурац)\w*\s+(\w+\s+)?(изменен|обновлен|"
            r"заменен|переписан)\w*|"
            r"(до того,? как|пока не) (тебя|тебе) (научили|обучили|заставили|запретили|добавили) "
            r"(\w+ )?(отказывать|отказываться|фильтр|ограничени|правил|цензур)",
            _F,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            r"(с (каких|какого) (слов|слова|фразы)|как|чем) (начинается|начинаются|заканчивается|"
            r"заканчиваются) (тво|сво)\w* (\w+ )?(инструкци|промпт|правил|настро|сообщени)|"
            r"(сообщени|текст)\w*[^.!?\n]{0,40}котор\w* (написал|написала|прислал|отправил|дал) не я|"
            r"\b(перечисли|процитируй|выведи|покажи|повтори|распечатай|выпиши)\w*[^.!?\n]{0,30}(эти|тво\w*|"
            r"сво\w*|все) (\w+ )?(запреты|ограничени\w*|правил\w*|инструкци\w*|указани\w*)[^.!?\n]{0,15}"
            r"(дословно|слово в слово|целиком|полностью|как есть)|"
            r"(пароль|парол\w*|ключ\w*|токен\w*|секрет\w*)[^.!?\n]{0,40}(в|из) (тво|сво)\w* (настройк|"
            r"конфигурац|промпт|инструкци|памят|контекст)|"
            r"\b(выведи|покажи|скажи|перечисли|дай|назови)\w*[^.!?\n]{0,30}(переменн\w* окружения|"
            r"ключ\w* (api|доступа)|api[- ]?ключ\w*|токен\w* доступа)[^.!?\n]{0,40}"
            r"(тебе|у тебя|тво\w*|сво\w*)",
            _F,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"(рассказ|истори|сценари|сказк|роман|стих|персонаж|героин|герой|роль|представь)[^\n]{0,200}?"
            r"(рецепт|синтез)\w* (\w+ )?(метамфетамин|наркотик|взрывчатк|бомб|"
            r"нервно-паралитическ|напалм)",
            _F,
        ),
    ),
]

_QUOTES = "'\"«»“”‘’„"


def _quoted_mention(text: str, match: re.Match[str]) -> bool:
    """Whether the match is a phrase in quotes and nothing more ("why did 'ignore previous instructions'
    become a meme?"): a text about an attack, not one. A quoted attack with more in the quotes counts."""
    before = text[max(match.start() - 3, 0) : match.start()].rstrip()
    after = text[match.end() : match.end() + 6]
    return bool(before) and before[-1] in _QUOTES and any(q in after for q in _QUOTES)


def required_literal_sets(pattern: re.Pattern[str]) -> list[frozenset[str]]:
    """Sets of lowercase strings such that every match of pattern contains a string of each set, the
    most selective set first (none when nothing is required). Most texts contain none of a rule's words,
    and a substring test is far cheaper than a scan by the regular expression: the rule runs only when
    each set has a string in the text. A rule "verb ... noun" thus waits for a verb and a noun."""

    def required(items: Any) -> list[set[str]]:
        candidates: list[set[str]] = []
        run: list[str] = []
        for op, av in [*items, (None, None)]:
            if op is sre_constants.LITERAL:
                run.append(chr(av))
                continue
            if run:
                candidates.append({"".join(run).lower()})
                run = []
            if op is sre_constants.SUBPATTERN:
                candidates += required(av[3])
            elif op is sre_constants.BRANCH:
                # Each branch must give one of its sets; their union is required of the whole.
                branches = [required(b) for b in av[1]]
                if all(branches):
                    candidates.append(set().union(*(b[0] for b in branches)))
            elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[0] >= 1:
                candidates += required(av[2])
        # The most selective first: the longest shortest string, then the fewest strings.
        return sorted(candidates, key=lambda c: (-min(map(len, c)), len(c)))

    return [frozenset(c) for c in required(sre_parser.parse(pattern.pattern, pattern.flags))]


def required_literals(pattern: re.Pattern[str]) -> frozenset[str]:
    """The most selective of required_literal_sets (empty when none is required)."""
    sets = required_literal_sets(pattern)
    return sets[0] if sets else frozenset()


_GRAM_TABLE_BITS = 16
_GRAM_PRIME = np.uint64(0x100000001B3)
_GRAM_MIX = np.uint64(0x9E3779B97F4A7C15)


def _gram_buckets(codes: np.ndarray, n: int) -> np.ndarray:
    """A table bucket for each character n-gram of a code-point array."""
    m = len(codes) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore"):
        h = codes[:m] + np.uint64(n)
        for j in range(1, n):
            h = h * _GRAM_PRIME + codes[j : j + m]
        h *= _GRAM_MIX
    return (h >> np.uint64(64 - _GRAM_TABLE_BITS)).astype(np.int64)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


class LiteralGate:
    """Which rules may match a text, decided for hundreds of rules in a few vectorised steps. A rule's
    required literal sets (required_literal_sets) say what every match contains; a literal is taken as
    present when each of its character trigrams (shorter literals: the literal itself) is among the
    text's, looked up in a small hashed table. A literal that is there always passes, so the gate never
    stops a rule that would match; a rare false pass only costs the rule's scan."""

    def __init__(self, literal_sets: Sequence[Sequence[frozenset[str]]]) -> None:
        literals = sorted({lit for sets in literal_sets for literal_set in sets for lit in literal_set})
        number = {lit: i for i, lit in enumerate(literals)}
        grams = [_gram_buckets(_code_points(lit), min(len(lit), 3)) for lit in literals]
        self._grams = np.concatenate(grams) if grams else np.zeros(0, dtype=np.int64)
        self._gram_starts = _starts(len(g) for g in grams)
        sets = [sorted(number[lit] for lit in literal_set) for rule in literal_sets for literal_set in rule]
        self._set_literals = np.array([i for literal_set in sets for i in literal_set], dtype=np.int64)
        self._set_starts = _starts(len(literal_set) for literal_set in sets)
        self._gated = np.array([i for i, rule in enumerate(literal_sets) if rule], dtype=np.int64)
        self._rule_starts = _starts(len(rule) for rule in literal_sets if rule)
        self._always = [i for i, rule in enumerate(literal_sets) if not rule]

    def open(self, lowered: str) -> list[int]:
        """The indices of the rules whose every literal set has a member in the lowercased text."""
        if not len(self._gated):
            return self._always
        codes = _code_points(lowered)
        table = np.zeros(1 << _GRAM_TABLE_BITS, dtype=bool)
        for n in (1, 2, 3):
            table[_gram_buckets(codes, n)] = True
        present = np.logical_and.reduceat(table[self._grams], self._gram_starts)
        set_ok = np.logical_or.reduceat(present[self._set_literals], self._set_starts)
        rule_ok = np.logical_and.reduceat(set_ok, self._rule_starts)
        return sorted([*self._always, *self._gated[rule_ok].tolist()])


def _starts(lengths: Iterable[int]) -> np.ndarray:
    """The start offsets of consecutive groups of these lengths (each at least 1)."""
    return np.cumsum([0, *lengths][:-1], dtype=np.int64)


_UPPER_LITERAL = re.compile(r"(?<!\\)[A-ZА-ЯЁ]")


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern ("a|(b|c)" gives "a" and "(b|c)"; "(a|b)" gives "a", "b")."""
    parts, _ = _scan_pattern(pattern, 0)
    if len(parts) == 1 and pattern.startswith("(") and not pattern.startswith("(?"):
        _, close = _scan_pattern(pattern, 1)
        if close == len(pattern) - 1:
            return _alternatives(pattern[1:-1])
    # \b(a|b)\b is \b(?:a)\b or \b(?:b)\b, and \b(a|b) is \b(?:a) or \b(?:b).
    if len(parts) == 1 and pattern.startswith(r"\b(") and not pattern.startswith(r"\b(?"):
        _, close = _scan_pattern(pattern, 3)
        for suffix in (r"\b", ""):
            if pattern.endswith(suffix) and close == len(pattern) - len(suffix) - 1:
                return [rf"\b(?:{alternative}){suffix}" for alternative in _alternatives(pattern[3:close])]
    return parts


# Python's engine tries each alternative of a group in turn at every position. Alternatives that start
# with a plain character are grouped by it, "(ignore|ignoring|ты|тебя|тво\w*)" becoming
# "(i(?:gnor(?:e|ing))|т(?:ы|еб(?:я)|во\w*))": most are then set aside by one comparison.
_SPECIAL = frozenset("\\()[].^$*+?{}|")
_QUANTIFIERS = frozenset("?*+{")


def _class_end(pattern: str, i: int) -> int:
    """The index just past the "[" at i and a leading "^" or "]", which do not close the class."""
    i += 1
    if pattern[i : i + 1] == "^":
        i += 1
    if pattern[i : i + 1] == "]":
        i += 1
    return i


def _scan_pattern(pattern: str, start: int) -> tuple[list[str], int]:
    """The top-level alternatives of the group whose content starts at start, and the index of the ")"
    that closes it (or the end of pattern)."""
    parts, depth, begin, i, in_class = [], 0, start, start, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i = _class_end(pattern, i)
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[begin:i])
            begin = i + 1
        i += 1
    parts.append(pattern[begin:i])
    return parts, i


def _by_first_character(alternatives: list[str]) -> str:
    """The alternatives grouped by their first character. Alternatives with different first characters
    never match at the same place, so grouping them changes nothing; among those that share one the
    order is kept, so the engine prefers the same alternative as before."""
    plain = all(a and a[0] not in _SPECIAL and a[1:2] not in _QUANTIFIERS for a in alternatives)
    if len(alternatives) < 2 or not plain:
        return "|".join(alternatives)
    by_first: dict[str, list[str]] = {}
    for alternative in alternatives:
        by_first.setdefault(alternative[0], []).append(alternative[1:])
    return "|".join(
        f"{first}{rests[0]}" if len(rests) == 1 else f"{first}(?:{_by_first_character(rests)})"
        for first, rests in by_first.items()
    )


def _grouped(pattern: str) -> str:
    """pattern with the alternatives of every plain and (?: group grouped by first character (not
    inside look-arounds, whose branches must keep their widths as written)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        elif in_class:
            in_class = ch != "]"
            out.append(ch)
            i += 1
        elif ch == "[":
            in_class = True
            end = _class_end(pattern, i)
            out.append(pattern[i:end])
            i = end
        elif ch == "(":
            prefix = (
                "?:" if pattern.startswith("?:", i + 1) else "?" if pattern.startswith("?", i + 1) else ""
            )
            alternatives, close = _scan_pattern(pattern, i + 1 + len(prefix))
            if prefix == "?":
                out.append(pattern[i : close + 1])
            else:
                out.append(f"({prefix}{_by_first_character([_grouped(a) for a in alternatives])})")
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_WORD_CHARACTER = re.compile(r"\w")


def _word_start(alternative: str) -> bool:
    return (
        bool(alternative) and alternative[0] not in _SPECIAL and bool(_WORD_CHARACTER.match(alternative[0]))
    )


def _boundary_behind(pattern: str) -> str:
    r"""pattern with a leading \b moved behind the word characters that follow it, as a look-behind:
    "\bact\s+as" becomes "act(?<!\wact)\s+as", "\b(i…|d…)" becomes "(i(?<!\wi)…|d(?<!\wd)…)". Before
    a word character \b means "no word character before", which the look-behind checks; the pattern now
    starts with a literal or a set of first characters, and the engine jumps between their
    occurrences instead of trying the whole pattern at every position."""
    if not pattern.startswith("\\b") or (pattern.startswith("\\b(?") and not pattern.startswith("\\b(?:")):
        return pattern
    rest = pattern[2:]
    if rest.startswith("("):
        prefix = "?:" if rest.startswith("(?:") else ""
        alternatives, close = _scan_pattern(rest, 1 + len(prefix))
        if rest[close + 1 : close + 2] in _QUANTIFIERS or not all(_word_start(a) for a in alternatives):
            return pattern
        moved = "|".join(f"{a[0]}(?<!\\w{a[0]}){a[1:]}" for a in alternatives)
        return f"({prefix}{moved}){rest[close + 1 :]}"
    end = 0
    while end < len(rest) and _word_start(rest[end]):
        end += 1
    if rest[end : end + 1] in _QUANTIFIERS:
        end -= 1
    if end < 1:
        return pattern
    return f"{rest[:end]}(?<!\\w{rest[:end]}){rest[end:]}"


# An upper bound of a match's length: fixed characters, plus how many runs of word characters (\w*, \w+)
# and of spaces (\s*, \s+) it may take, each no longer than the text's longest such run.
Width = tuple[int, int, int]


@dataclass(frozen=True)
class _Gated:
    code: str
    pattern: re.Pattern[str]
    on_lowered: bool
    # How long a match may be, and how far beyond it its look-arounds read; None when unbounded or when
    # a match may be empty.
    width: Width | None
    context: int | None


def _width(items: Any) -> Width | None:
    total = (0, 0, 0)
    for op, av in items:
        if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.IN, sre_constants.ANY):
            part: Width | None = (1, 0, 0)
        elif op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            part = (0, 0, 0)
        elif op is sre_constants.SUBPATTERN:
            part = _width(av[3])
        elif op is sre_constants.BRANCH:
            branches = [_width(b) for b in av[1]]
            part = None
            if all(branches):
                widths = [b for b in branches if b is not None]
                part = (max(b[0] for b in widths), max(b[1] for b in widths), max(b[2] for b in widths))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[1] < sre_constants.MAXREPEAT:
            inner = _width(av[2])
            part = None if inner is None else (inner[0] * av[1], inner[1] * av[1], inner[2] * av[1])
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            part = _RUNS.get(str(list(av[2])))
        else:
            part = None
        if part is None:
            return None
        total = (total[0] + part[0], total[1] + part[1], total[2] + part[2])
    return total


# Unbounded repeats whose length the text bounds: \w* and \w+ a run of word characters, \s* and \s+ one of
# spaces.
_RUNS: dict[str, Width] = {
    str([(sre_constants.IN, [(sre_constants.CATEGORY, sre_constants.CATEGORY_WORD)])]): (0, 1, 0),
    str([(sre_constants.IN, [(sre_constants.CATEGORY, sre_constants.CATEGORY_SPACE)])]): (0, 0, 1),
}
_WORD_RUN = re.compile(r"\w+")
_SPACE_RUN = re.compile(r"\s+")


def _reach(pattern: re.Pattern[str]) -> tuple[Width | None, int | None]:
    """How long a match of pattern may be and how far beyond a match its assertions read (_Gated)."""
    parsed = sre_parser.parse(pattern.pattern, pattern.flags)
    if parsed.getwidth()[0] == 0:
        return None, None

    def assertions(items: Any) -> int | None:
        widest = 0
        for op, av in items:
            if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                found = av[1].getwidth()[1]
                inner = assertions(av[1])
                if found >= sre_constants.MAXREPEAT or inner is None:
                    return None
                widest = max(widest, found + inner)
                continue
            if op is sre_constants.SUBPATTERN:
                children = [av[3]]
            elif op is sre_constants.BRANCH:
                children = av[1]
            elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
                children = [av[2]]
            else:
                continue
            for child in children:
                inner = assertions(child)
                if inner is None:
                    return None
                widest = max(widest, inner)
        return widest

    widest = assertions(parsed)
    width = _width(parsed)
    if widest is None or width is None:
        return None, None
    # \b, ^ and $ read a character on either side; one more keeps $ away from a cut end.
    return width, widest + 2


class RuleSet:
    """Rules split into their alternatives, each gated by its required literals. A long rule of many
    alternatives would otherwise open on the common words of any one of them. A case-insensitive rule
    written in lowercase runs without IGNORECASE on the lowercased text, which Python's engine scans
    about twice as fast."""

    def __init__(self, rules: Sequence[tuple[str, re.Pattern[str]]]) -> None:
        parts = []
        for code, rule in rules:
            lowered = bool(rule.flags & re.IGNORECASE) and not _UPPER_LITERAL.search(rule.pattern)
            flags = rule.flags & ~re.IGNORECASE if lowered else rule.flags
            for alternative in _alternatives(rule.pattern):
                compiled = re.compile(alternative, flags)
                literal_sets = required_literal_sets(compiled)
                width, context = _reach(compiled)
                if not flags & re.IGNORECASE:
                    compiled = re.compile(_boundary_behind(_grouped(alternative)), flags)
                parts.append((_Gated(code, compiled, lowered, width, context), literal_sets))
        self.gate = LiteralGate([sets for _, sets in parts])
        self.rules = [rule for rule, _ in parts]

    def codes(self, text: str) -> set[str]:
        """The codes of the rules that match text, a quoted mention of an attack aside."""
        return self.scan(text)[0]

    def scan(
        self, text: str, changed: Spans | None = None, unmatched: frozenset[int] = frozenset()
    ) -> tuple[set[str], frozenset[int]]:
        """The codes of the rules that match text, and the rules that matched nowhere in it (not even
        a quoted mention), when every rule was read to the end.

        changed and unmatched describe a text this one was made from: changed are the spans of this text
        that differ from it (the rest is its characters in order), unmatched the rules that matched
        nowhere in it. A match of such a rule here must then reach into a changed span (elsewhere it
        would have matched there too), so a rule of bounded width is only run next to the spans."""
        lowered = text.lower()
        # Lowercasing that changes a length, or a final sigma whose form depends on its neighbours,
        # would break the character-by-character correspondence.
        local = changed is not None and len(lowered) == len(text) and "Σ" not in text
        found: set[str] = set()
        opened = self.gate.open(lowered)
        clean = []
        runs: dict[str, tuple[int, int]] = {}
        for i in opened:
            rule = self.rules[i]
            if rule.code in found:
                continue
            target = lowered if rule.on_lowered else text
            if local and i in unmatched and rule.width is not None and rule.context is not None:
                if target not in runs:
                    runs[target] = (
                        max(map(len, _WORD_RUN.findall(target)), default=0),
                        max(map(len, _SPACE_RUN.findall(target)), default=0),
                    )
                words, spaces = runs[target]
                width = rule.width[0] + rule.width[1] * words + rule.width[2] * spaces
                matches = _matches_near(rule.pattern, target, changed or [], width, rule.context)
            else:
                matches = rule.pattern.finditer(target)
            matched = False
            for match in matches:
                matched = True
                if not _quoted_mention(target, match):
                    found.add(rule.code)
                    break
            if not matched:
                clean.append(i)
        if found:
            return found, frozenset()
        return found, frozenset(range(len(self.rules))).difference(opened).union(clean)

    def each_match(self, text: str) -> list[str]:
        """The code of every alternative that matches text, once per alternative."""
        lowered = text.lower()
        return [
            rule.code
            for rule in (self.rules[i] for i in self.gate.open(lowered))
            if rule.pattern.search(lowered if rule.on_lowered else text)
        ]


def _matches_near(
    pattern: re.Pattern[str], text: str, changed: Spans, width: int, context: int
) -> Iterable[re.Match[str]]:
    """What pattern.finditer(text) yields, given that every match reaches into a changed span: a match
    starts at most width + context before a span and at most context after it. Each search is cut
    width + context past the last start it may return, so the engine reads only what it would read
    in the whole text."""
    windows: Spans = []
    for start, end in changed:
        window = (max(start - width - context, 0), end + context)
        if windows and window[0] <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], window[1]))
        else:
            windows.append(window)
    position = 0
    for first, last in windows:
        position = max(position, first)
        while position <= last:
            match = pattern.search(text, position, min(last + width + context, len(text)))
            if match is None or match.start() > last:
                break
            yield match
            position = match.end()


_RULES = RuleSet(RULES)


def rule_hits(text: str) -> set[str]:
    """The codes of the rules that match text."""
    return _RULES.codes(text)


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
_POWERS = {n: np.uint64(pow(1_000_003, n, 1 << 64)) for n in range(2, 6)}
_MIX = np.uint64(0xFF51AFD7ED558CCD)


def features(text: str, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed character 3-5-grams and word 1-2-grams of a lowercased text: bucket indices and their
    L2-normalised log counts. Vectorised over code points, so a 1000-character window costs well under
    a millisecond. Shared by the guard and scripts/train_guard.py."""
    lowered = " " + " ".join(text.lower().split()) + " "
    codes = np.frombuffer(lowered.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts = []
    with np.errstate(over="ignore"):
        # The hash of an n-gram is n·P^n + c0·P^(n-1) + … + c(n-1) (mod 2^64), so each longer gram's
        # hash is the shorter one's times P plus its last character and P^n.
        if len(codes) >= 3:
            h = codes[:-2] * _POWERS[2] + codes[1:-1] * _PRIME + codes[2:] + _POWERS[3] * np.uint64(3)
            parts.append(h)
            for n in (4, 5):
                if len(h) < 2:
                    break
                h = h[:-1] * _PRIME + codes[n - 1 :] + _POWERS[n]
                parts.append(h)
        words = re.findall(r"\w+", lowered)
        parts.append(_hash_words(words, 1))
        parts.append(_hash_words([f"{a} {b}" for a, b in itertools.pairwise(words)], 2))
        hashed = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        hashed ^= hashed >> np.uint64(33)
        hashed *= _MIX
        hashed ^= hashed >> np.uint64(29)
    # np.unique(..., return_counts=True), spelled out on 32-bit buckets: the same result, sorted faster.
    ordered = (hashed & np.uint64(n_buckets - 1)).astype(np.uint32 if n_buckets <= 1 << 32 else np.uint64)
    ordered.sort()
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    buckets, counts = ordered[starts], np.diff(starts, append=len(ordered))
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

    def probability(self, text: str, enough: float | None = None) -> float:
        """The injection probability of the most suspicious window of the text; with enough, the first
        window's that reaches it (a caller that only asks whether any window does)."""
        best = 0.0
        last = max(len(text) - _WINDOW_CHARS, 0)
        # The last window ends at the text's end: with steps alone the tail of a 2,000-character text
        # (after 1,800) was never read.
        starts = sorted({*range(0, last + 1, _WINDOW_STEP), last})
        for start in starts:
            buckets, values = features(text[start : start + _WINDOW_CHARS], self.n_buckets)
            z = float(self.weights[buckets] @ values) + self.bias
            best = max(best, 1.0 / (1.0 + np.exp(-z)))
            if enough is not None and best >= enough:
                break
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
        self._weak = RuleSet(
            [
                *(("instruction_language", _phrase(p)) for p in settings.instruction_patterns),
                *(("instruction_language", re.compile(p, re.IGNORECASE)) for p in settings.instruction_regex),
                *(("role_language", re.compile(p, re.IGNORECASE)) for p in settings.role_override_regex),
                *(("meta_system_language", re.compile(p, re.IGNORECASE)) for p in settings.meta_system_regex),
                *(("meta_system_language", _phrase(p)) for p in settings.exfiltration_patterns),
            ]
        )
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
        reasons, unmatched = _RULES.scan(text)
        obfuscated = normalised.obfuscated
        spelled, changed = spelled_out_with_changes(text) if not reasons else (text, [])
        if spelled != text:
            reasons, _ = _RULES.scan(spelled, changed, unmatched)
            obfuscated = obfuscated or bool(reasons)
        for backwards in reversed_readings(text) if not reasons else []:
            reasons = rule_hits(backwards)
            if reasons:
                obfuscated = True
                break
        strong = _STRONG_SCORE if reasons else 0.0
        weak_hits = self._weak.each_match(text)
        if obfuscated:
            weak_hits.append("obfuscation")
        reasons.update(weak_hits)
        # A rule's hit already scores 1: the classifier then only says whether it also refuses.
        enough = threshold if strong else None
        probability = self.model.probability(text, enough) if self.model is not None else 0.0
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
