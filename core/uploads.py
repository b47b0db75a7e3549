"""Where uploads are kept: one file per owner and content, so the same file twice is one file.

Every process that parses, chunks or embeds reads from here: with several hosts, var_dir/uploads must
be shared storage.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings


def upload_path(settings: Settings, owner: int, sha256: str) -> Path:
    return settings.var_dir / "uploads" / str(owner) / sha256
