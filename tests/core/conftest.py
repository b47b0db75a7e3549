"""Settings tests must see only what each test sets, not the developer's shell or the project's .env."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.settings import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment without any setting, in an empty working directory (so no .env); returns it."""
    names = {name.upper() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.upper() in names:
            monkeypatch.delenv(key)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    # Generated secrets go to var_dir; keep them out of the project's var/.
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    return workdir
