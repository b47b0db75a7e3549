"""Sparse (BM25-style) term vectors for documents and queries, in the form Qdrant stores them.

A document's value for a term is BM25's term-frequency saturation; the IDF factor is left to Qdrant's
IDF modifier on the sparse vector, so the collection computes it from its own document frequencies.
A query's value is how often it says the term (1 per distinct term with QUERY_TERM_COUNTS off), so
the dot product Qdrant computes is the BM25 score.

Terms are Unicode word tokens, case-folded, stop words dropped and stemmed with the Snowball stemmer of
the token's language. Term ids are a 31-bit blake2b hash of the stemmed term: the same in every process
and on every machine, unlike Python's salted hash().
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from functools import cache

import Stemmer

# BM25 saturation: k1 bounds how much a repeated term adds, b how much a long text is penalised.
# Chosen on the dev queries of CACM and Cranfield (bench/retrieval_quality.py --tune) over 1.2/1.5
# and 0.5/0.75: chunks are already of bounded length, so a milder length penalty fits them.
BM25_K1 = 1.5
BM25_B = 0.5
# Length (in kept terms) that b compares a text against. Qdrant has no collection-wide average at
# upsert time, so it is a constant. A 200-token chunk keeps about 100 terms; twice that (tuned over
# 100/200) penalises length less, which suits chunks that all have about the same length.
BM25_AVG_LENGTH = 200.0
# A title term counts as this many occurrences in the text it heads (tuned over 1, 2, 3).
TITLE_WEIGHT = 3.0
# A term repeated in a query weighs that many times (as BM25's query side does). Long questions
# repeat their key word; on CACM (k1 1.2, b 0.75) it alone lifted the sparse nDCG@10 from 0.436 to 0.473.
QUERY_TERM_COUNTS = True
DEFAULT_LANGUAGE = "en"
# Tokens shorter than this (in characters) are dropped; 1 keeps single letters and digits ("c", "5").
MIN_TOKEN_CHARS = 1

_TOKEN = re.compile(r"\w+", re.UNICODE)

# Snowball stemmer names for the languages we detect.
STEMMER_NAMES: dict[str, str] = {
    "en": "english",
    "ru": "russian",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "uk": "russian",  # no Ukrainian Snowball stemmer; the Russian one joins most shared endings
}

STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """a about above after again against all am an and any are as at be because been before being
        below between both but by can could did do does doing down during each few for from further had
        has have having he her here hers herself him himself his how i if in into is it its itself just
        me more most my myself no nor not now of off on once only or other our ours ourselves out over own
        same she should so some such than that the their theirs them themselves then there these they
        this those through to too under until up very was we were what when where which while who whom
        why will with would you your yours yourself yourselves""".split()
    ),
    "ru": frozenset(
        """а без более бы был была были было быть в вам вас весь во вот все всего всех вы где да даже для
        до его ее её если есть еще ещё же за здесь и из или им их к как ко когда кто ли либо мне может мы
        на над надо наш не него нее неё нет ни них но ну о об однако он она они оно от очень по под при с
        со так также такой там те тем то того тоже той только том ты у уже хотя чего чей чем что чтобы чье
        чья эта эти это я""".split()
    ),
    "de": frozenset(
        """aber als am an auch auf aus bei bin bis bist da dadurch daher darum das dass dein deine dem den
        der des dessen die dies diese dieser dieses doch dort du durch ein eine einem einen einer eines er
        es euer eure für hatte hatten hier hinter ich ihr ihre im in ist ja jede jedem jeden jeder jedes
        jener jenes jetzt kann kannst können könnt machen mein meine mit muss musst müssen nach nachdem
        nein nicht nun oder seid sein seine sich sie sind so über um und uns unser unsere unter vom von
        vor wann warum was weiter weitere wenn wer werde werden werdet weshalb wie wieder wieso wir wird
        wirst wo woher wohin zu zum zur""".split()
    ),
    "fr": frozenset(
        """au aux avec ce ces dans de des du elle en et eux il ils je la le les leur lui ma mais me même
        mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu
        un une vos votre vous c d j l à m n s t y été était est sont""".split()
    ),
    "es": frozenset(
        """a al algo como con de del el ella ellas ellos en entre era es esa ese eso esta este esto estos
        fue ha hay la las le les lo los más me mi muy no nos o para pero por que se sin sobre su sus te
        tu un una uno y ya yo""".split()
    ),
}

# Function words that tell Latin-script languages apart; the Cyrillic share decides the rest.
_LATIN_MARKERS: dict[str, frozenset[str]] = {
    "en": frozenset("the and of to is in that for with are this was on be".split()),
    "de": frozenset("der die und das ist nicht mit von zu den ein eine sich auf für".split()),
    "fr": frozenset("le la les et des est une pour dans que pas sur qui avec du".split()),
    "es": frozenset("el la los las y es que en del por una para con se".split()),
    "it": frozenset("il di che è la per una sono con non gli della".split()),
    "pt": frozenset("o os que não uma para com do da em são".split()),
    "nl": frozenset("de het een en van is dat niet op zijn met voor".split()),
}
_UKRAINIAN_LETTERS = frozenset("іїєґ")


def _letters(text: str) -> tuple[int, int, int]:
    """Counts of (letters, Cyrillic letters, Ukrainian-only letters)."""
    letters = cyrillic = ukrainian = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if "\u0400" <= ch <= "\u04ff":
                cyrillic += 1
                if ch.lower() in _UKRAINIAN_LETTERS:
                    ukrainian += 1
    return letters, cyrillic, ukrainian


def detect_language(text: str) -> str:
    """The text's main language as an ISO 639-1 code; DEFAULT_LANGUAGE when nothing tells."""
    letters, cyrillic, ukrainian = _letters(text)
    if letters == 0:
        return DEFAULT_LANGUAGE
    if cyrillic / letters >= 0.3:
        return "uk" if ukrainian / cyrillic >= 0.02 else "ru"
    words = [w.casefold() for w in _TOKEN.findall(text)]
    hits = {lang: sum(1 for w in words if w in markers) for lang, markers in _LATIN_MARKERS.items()}
    best = max(hits, key=lambda lang: (hits[lang], lang == DEFAULT_LANGUAGE))
    return best if hits[best] > 0 else DEFAULT_LANGUAGE


@cache
def _stemmer(name: str) -> Stemmer.Stemmer:
    return Stemmer.Stemmer(name)


def _is_cyrillic(token: str) -> bool:
    return "\u0400" <= token[0] <= "\u04ff"


def terms(text: str, language: str | None = None) -> list[str]:
    """Stemmed, stop-word-free terms of `text` in order.

    Each token is stemmed by its own script: Cyrillic tokens by the Cyrillic language, others by the
    text's Latin language, so an English name inside a Russian text is stemmed as English.
    """
    language = language or detect_language(text)
    cyrillic_lang = language if language in ("ru", "uk") else "ru"
    latin_lang = language if language not in ("ru", "uk") else DEFAULT_LANGUAGE
    normalized = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    out: list[str] = []
    for token in _TOKEN.findall(normalized):
        if token.startswith("_") or token.endswith("_"):
            token = token.strip("_")
            if not token:
                continue
        lang = cyrillic_lang if _is_cyrillic(token) else latin_lang
        if token in STOP_WORDS.get(lang, frozenset()) or len(token) < MIN_TOKEN_CHARS:
            continue
        name = STEMMER_NAMES.get(lang)
        out.append(_stemmer(name).stemWord(token) if name else token)
    return out


def term_id(term: str) -> int:
    """A stable 31-bit id for a stemmed term (Qdrant sparse indices are unsigned 32-bit)."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def _to_sparse(weights: dict[int, float]) -> tuple[list[int], list[float]]:
    indices = sorted(weights)
    return indices, [weights[i] for i in indices]


def document_sparse(
    text: str,
    title: str | None = None,
    language: str | None = None,
    *,
    k1: float | None = None,
    b: float | None = None,
    avg_length: float | None = None,
    title_weight: float | None = None,
) -> tuple[list[int], list[float]]:
    """(indices, values) of a document's BM25 term saturation; title terms count `title_weight` times.

    The keyword arguments override the module constants (for tuning and settings).
    """
    k1 = BM25_K1 if k1 is None else k1
    b = BM25_B if b is None else b
    avg_length = BM25_AVG_LENGTH if avg_length is None else avg_length
    title_weight = TITLE_WEIGHT if title_weight is None else title_weight
    language = language or detect_language(f"{title or ''}\n{text}")
    counts: Counter[str] = Counter()
    for term in terms(text, language):
        counts[term] += 1.0
    if title:
        for term in terms(title, language):
            counts[term] += title_weight
    length = sum(counts.values())
    norm = k1 * (1.0 - b + b * length / avg_length)
    weights: dict[int, float] = {}
    for term, tf in counts.items():
        tid = term_id(term)
        # Two terms on one id (a hash collision) add up rather than overwrite each other.
        weights[tid] = weights.get(tid, 0.0) + tf * (k1 + 1.0) / (tf + norm)
    return _to_sparse(weights)


def query_sparse(text: str, language: str | None = None) -> tuple[list[int], list[float]]:
    """(indices, values) of a query: each term valued by how often the query says it (1 per distinct
    term when QUERY_TERM_COUNTS is off), so Qdrant's dot product with its IDF modifier gives BM25."""
    counts: Counter[int] = Counter(term_id(term) for term in terms(text, language))
    return _to_sparse({tid: float(n) if QUERY_TERM_COUNTS else 1.0 for tid, n in counts.items()})
