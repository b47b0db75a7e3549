"""One logging set-up for every process, with secret values masked in every record.

Settings hold secrets as `SecretStr`, so they print as `**********`. The filter below is the second
line: if a secret value ends up in a message anyway (an exception text, a URL with a password, a
library's debug line), it is replaced before any handler writes it.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Iterable

MASK = "**********"


class SecretMaskingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets: list[str] = []
        self.add(*secrets, *_late_secrets)
        _filters.add(self)

    def add(self, *secrets: str) -> None:
        # Longest first, so a secret that contains another is masked whole.
        known = set(self._secrets) | {s for s in secrets if len(s) >= 4}
        self._secrets = sorted(known, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            # Left to the handler, a bad format string makes logging print the raw arguments to stderr.
            message = f"{record.msg} (arguments that do not fit the message: {record.args!r})"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self._mask(message), None
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True


# Secrets that appear after logging is configured (one generated on first use) join every filter.
_filters: weakref.WeakSet[SecretMaskingFilter] = weakref.WeakSet()
_late_secrets: set[str] = set()


def mask_secret(secret: str) -> None:
    """Masks this value from now on in every filter, including ones configured later."""
    _late_secrets.add(secret)
    for masking_filter in list(_filters):
        masking_filter.add(secret)


def configure_logging(level: str, secrets: Iterable[str], stream=None) -> None:
    """Route every logger through one handler on stderr whose filter masks the given secrets."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per HTTP call made by clients is noise at INFO; their warnings still show.
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn installs its own handlers; make its records flow through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
