"""One logging set-up for every process, with secret values masked in every record.

Settings hold secrets as `SecretStr`, so they print as `**********`. The filter below is the second
line: if a secret value ends up in a message anyway (an exception text, a URL with a password, a
library's debug line), it is replaced before any handler writes it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

MASK = "**********"


class SecretMaskingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked, exc_text = message, record.exc_text
        for secret in self._secrets:
            masked = masked.replace(secret, MASK)
            if exc_text:
                exc_text = exc_text.replace(secret, MASK)
        record.msg, record.args, record.exc_text = masked, None, exc_text
        return True


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
