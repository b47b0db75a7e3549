"""Security events: a row for every guard refusal and every flagged text, and the lockout they lead to.

A row keeps the text's sha256 and a short redacted excerpt, never the text: enough for an admin to
recognise a repeated attack and see its shape, not enough to leak what a user pasted (addresses,
numbers, keys). Refusals that count toward a lockout lock their user out for security_lockout_s after
the latest of security_lockout_refusals within security_lockout_window_s; an admin's lift discards
every refusal before it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.settings import Settings
from core.tables import SecurityEvent, User

EXCERPT_CHARS = 200

# In the process that records the event: the API's /metrics serves the default registry.
SECURITY_EVENTS = Counter(
    "assistant_security_events", "Guard refusals and flagged texts, once per reason", ["reason", "kind"]
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A value given to a credential-like name: the value goes whatever it looks like.
_ASSIGNED_SECRET = re.compile(
    r"\b(api[_-]?key|access[_-]?token|token|secret|password|passwd|pwd)(\s*[:=]\s*)\S+", re.IGNORECASE
)
_BEARER = re.compile(r"\b(bearer\s+)\S+", re.IGNORECASE)
# Keys, tokens, hashes and encoded blobs: a long run of token characters with both letters and digits.
_TOKEN = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_HAS_DIGIT = re.compile(r"\d")
# Card, account and phone numbers: six digits or more, maybe grouped by spaces, dots or dashes.
_DIGITS = re.compile(r"\+?\d(?:[ .\-]?\d){5,}")
_SPACE = re.compile(r"\s+")


def _mask_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if _HAS_LETTER.search(token) and _HAS_DIGIT.search(token):
        return "[secret]"
    return token


def redact(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A one-line excerpt of at most limit characters with e-mail addresses, long digit runs and
    things that look like keys or tokens masked. Masking happens before cutting, so a cut never
    leaves the start of an address or a key showing."""
    # Invisible and control characters go (an admin reads the words they split); whitespace is one space.
    visible = "".join(
        c for c in text if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf", "Co", "Cs")
    )
    masked = _EMAIL.sub("[email]", visible)
    masked = _ASSIGNED_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[secret]", masked)
    masked = _BEARER.sub(lambda m: f"{m.group(1)}[secret]", masked)
    masked = _TOKEN.sub(_mask_token, masked)
    masked = _DIGITS.sub("[number]", masked)
    masked = _SPACE.sub(" ", masked).strip()
    if len(masked) <= limit:
        return masked
    return masked[: max(limit - 1, 0)] + "…"


def record_security_event(
    session: AsyncSession,
    *,
    user_id: int | None,
    route: str,
    kind: str,
    reasons: list[str],
    score: float,
    text: str,
    job_id: str | None = None,
    counts_toward_lockout: bool = True,
) -> SecurityEvent:
    """Adds the event to the session; the caller commits (with its own changes, or alone)."""
    event = SecurityEvent(
        at=datetime.now(UTC),
        user_id=user_id,
        route=route[:200],
        kind=kind,
        reasons=sorted(reasons),
        score=float(score),
        text_sha256=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        excerpt=redact(text),
        job_id=job_id,
        counts_toward_lockout=counts_toward_lockout,
    )
    session.add(event)
    return event


def count_security_event(event: SecurityEvent) -> None:
    """Adds the event to assistant_security_events_total, once per reason; call it once it is committed."""
    for reason in event.reasons or ["unspecified"]:
        SECURITY_EVENTS.labels(reason=reason, kind=event.kind).inc()


# --- Lockout --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lockout:
    user_id: int
    username: str
    until: datetime
    # Counting refusals in the window that ends at the refusal which set `until`.
    refusals: int
    last_refusal_at: datetime


def _lockout_end(times: Sequence[datetime], settings: Settings, now: datetime) -> tuple[datetime, int] | None:
    """Given a user's counting refusals in ascending order, when their lockout ends (and how many
    refusals the deciding window held), or None when they are not locked out at `now`."""
    needed = settings.security_lockout_refusals
    if needed <= 0:
        return None  # lockout switched off
    window = timedelta(seconds=settings.security_lockout_window_s)
    length = timedelta(seconds=settings.security_lockout_s)
    found: tuple[datetime, int] | None = None
    start = 0
    for end, at in enumerate(times):
        while times[start] < at - window:
            start += 1
        count = end - start + 1
        # Any refusal that completes a full window locks out from itself; the latest one decides.
        if count >= needed and at + length > now:
            found = (at + length, count)
    return found


def _lookback_start(settings: Settings, now: datetime) -> datetime:
    # A lockout still running started within security_lockout_s, its window before that.
    return now - timedelta(seconds=settings.security_lockout_s + settings.security_lockout_window_s)


async def lockout_until(session: AsyncSession, settings: Settings, user_id: int) -> datetime | None:
    """When the user's lockout ends, or None if they are not locked out now."""
    now = datetime.now(UTC)
    lifted_at = await session.scalar(select(User.lockout_lifted_at).where(User.id == user_id))
    query = select(SecurityEvent.at).where(
        SecurityEvent.user_id == user_id,
        SecurityEvent.counts_toward_lockout.is_(True),
        SecurityEvent.at >= _lookback_start(settings, now),
    )
    if lifted_at is not None:
        query = query.where(SecurityEvent.at > lifted_at)
    times = list(await session.scalars(query.order_by(SecurityEvent.at)))
    end = _lockout_end(times, settings, now)
    return end[0] if end else None


async def current_lockouts(session: AsyncSession, settings: Settings) -> list[Lockout]:
    """Every user locked out now, the one whose lockout ends last first."""
    now = datetime.now(UTC)
    rows = await session.execute(
        select(SecurityEvent.user_id, User.username, SecurityEvent.at, User.lockout_lifted_at)
        .join(User, User.id == SecurityEvent.user_id)
        .where(SecurityEvent.counts_toward_lockout.is_(True))
        .where(SecurityEvent.at >= _lookback_start(settings, now))
        .order_by(SecurityEvent.user_id, SecurityEvent.at)
    )
    times: dict[tuple[int, str], list[datetime]] = {}
    for user_id, username, at, lifted_at in rows:
        if lifted_at is None or at > lifted_at:
            times.setdefault((user_id, username), []).append(at)
    lockouts = []
    for (user_id, username), user_times in times.items():
        end = _lockout_end(user_times, settings, now)
        if end is not None:
            lockouts.append(Lockout(user_id, username, end[0], end[1], user_times[-1]))
    return sorted(lockouts, key=lambda lockout: (lockout.until, lockout.user_id), reverse=True)
