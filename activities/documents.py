"""Document activities: `parse_document` reads an upload's text page by page, `chunk_document` cuts it
into chunks of the embedder's tokens.

Parsing runs in a child process with a wall-clock limit and an address-space cap, so a hostile or broken
file (a page tree that loops, a decompression bomb, endless content streams) costs at most that child:
past the limit it is killed and the document fails with the reason. Children are forked from a server
process that has the parser imported already (multiprocessing's forkserver): a fresh interpreter would
spend 0.7 CPU seconds importing it for every file, on the cores the embedder needs.

Texts never travel through Temporal, whose payloads stop at about 2 MB: the parser writes the pages as JSON
next to the upload (`<upload>.pages.json`), the chunker writes JSON lines next to that, and the activities
return paths and counts. A document that cannot be read ends in a non-retryable `DocumentError` its owner
understands.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import io
import json
import multiprocessing
import multiprocessing.forkserver
import os
import re
import resource
import signal
import sys
import threading
import traceback
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.chunking import Chunker, tokenizer_for_embedder, write_atomic, write_chunks
from core.schemas import (
    ChunkRequest,
    ChunkResult,
    PageError,
    PageText,
    ParsedDocument,
    ParseRequest,
    ParseResult,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from core.settings import Settings

T = TypeVar("T")

HEARTBEAT_EVERY_S = 1.0
EXIT_OUT_OF_MEMORY = 3
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# The parser's children come from one forkserver per process that parses; it imports these once.
PARSER_MODULES = ["activities.documents", "pypdf", "pypdf.errors"]
_parsers = multiprocessing.get_context("forkserver")

SCANNED = "no text layer (a scanned page?); OCR is not available"
BLANK = "blank page"
INFLATES_TOO_FAR = "a stream on this page inflates past the parser's limits (a decompression bomb?)"


class DocumentError(Exception):
    """A document that cannot be read. `code` is for programs, the message for the document's owner."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ParseLimits:
    max_bytes: int
    max_pages: int
    timeout_s: float
    memory_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            max_bytes=settings.upload_max_bytes,
            max_pages=settings.upload_max_pages,
            timeout_s=settings.parse_timeout_s,
            memory_mb=settings.parse_memory_limit_mb,
        )


def pages_path_for(upload: str | Path) -> Path:
    return Path(f"{upload}.pages.json")


def chunks_path_for(pages_path: str | Path, key: str) -> Path:
    """Chunks of one set of limits and tokenizer: another set gets another file, so two ingestions of the
    same upload with different settings never read each other's chunks."""
    base = str(pages_path).removesuffix(".pages.json")
    return Path(f"{base}.chunks-{key}.jsonl")


class DocumentActivities:
    """Activities get their settings from the worker that hosts them, never from globals."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        start_parser_server()

    @activity.defn(name="parse_document")
    async def parse_document(self, request: ParseRequest) -> ParseResult:
        try:
            return await parse_in_child(request, ParseLimits.from_settings(self.settings), activity.heartbeat)
        except DocumentError as exc:
            # The same file fails the same way on every attempt: retrying only delays the answer.
            raise ApplicationError(
                str(exc), {"code": exc.code}, type="DocumentError", non_retryable=True
            ) from exc

    @activity.defn(name="chunk_document")
    async def chunk_document(self, request: ChunkRequest) -> ChunkResult:
        settings = self.settings
        tokenizer = request.tokenizer_path or tokenizer_for_embedder(
            settings, request.embedder or settings.embedding_model
        )
        limits = {
            "max_chunk_tokens": request.max_chunk_tokens or settings.max_chunk_tokens,
            "overlap_tokens": (
                settings.chunk_overlap_tokens
                if request.chunk_overlap_tokens is None
                else request.chunk_overlap_tokens
            ),
            "max_embed_tokens": request.max_embed_tokens or settings.max_embed_tokens,
        }
        max_chunks = request.max_chunks or settings.max_embed_chunks
        try:
            chunker = Chunker.from_file(tokenizer, **limits)
        except ValueError as exc:
            raise ApplicationError(str(exc), type="InvalidChunkLimits", non_retryable=True) from exc
        key = hashlib.sha256(json.dumps([tokenizer, limits, max_chunks]).encode()).hexdigest()[:12]
        output = chunks_path_for(request.pages_path, key)
        progress: dict[str, int] = {"page": 0}

        def chunk(stop: threading.Event) -> ChunkResult:
            parsed = ParsedDocument.model_validate_json(Path(request.pages_path).read_bytes())

            def on_page(page: int) -> None:
                if stop.is_set():
                    raise _Stopped
                progress["page"] = page

            chunked = chunker.chunk_pages(parsed.pages, max_chunks=max_chunks, on_page=on_page)
            write_chunks(output, chunked.chunks)
            return ChunkResult(
                chunks_path=str(output),
                chunk_count=len(chunked.chunks),
                token_count=chunked.token_count,
                truncated=chunked.truncated,
                warnings=chunked.warnings,
            )

        return await _in_thread_heartbeating(chunk, progress)


class _Stopped(Exception):
    """Raised in a worker thread whose activity is gone (cancelled, or its worker shutting down)."""


async def _in_thread_heartbeating(work: Callable[[threading.Event], T], progress: dict[str, int]) -> T:
    """Runs CPU-bound work off the event loop, heartbeating meanwhile: the heartbeat is how a cancel
    reaches the activity, and how a dead worker is noticed before the start-to-close timeout."""
    stop = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(work, stop))
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=HEARTBEAT_EVERY_S)
            if done:
                return task.result()
            activity.heartbeat(dict(progress))
    finally:
        stop.set()
        # A thread cannot be cancelled: it stops at its next page; its _Stopped is nobody's error.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


# --- the parent side: run the parser in a child process ---------------------------------------


def start_parser_server() -> None:
    """Starts the process parsers are forked from, unless it runs already; it imports the parser in the
    background, so the first file does not wait for that."""
    _parsers.set_forkserver_preload(PARSER_MODULES)
    multiprocessing.forkserver.ensure_running()


async def parse_in_child(
    request: ParseRequest, limits: ParseLimits, heartbeat: Callable[..., None]
) -> ParseResult:
    """Parses the upload in a child process, killed past limits.timeout_s; `heartbeat` is called about
    every second with the pages done so far."""
    output = pages_path_for(request.path)
    job = {
        "path": request.path,
        "media_type": request.media_type,
        "password": request.password,  # through a pipe: a command line is visible to every user
        "output": str(output),
        "limits": asdict(limits),
    }
    start_parser_server()
    reader, writer = _parsers.Pipe(duplex=False)
    process = _parsers.Process(target=_child_main, args=(job, writer), name="parser", daemon=True)
    progress: dict[str, int] = {"page": 0, "of": 0}
    final: dict[str, Any] = {}

    def read_messages() -> None:
        # JSON, not pickle: a file that took over the parser must not get to run code in this process.
        with reader:
            while True:
                try:
                    message = json.loads(reader.recv_bytes(MAX_MESSAGE_BYTES))
                except (EOFError, OSError):
                    return
                if "page" in message:
                    progress.update(message)
                else:
                    final.update(message)

    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(process.sentinel)  # it stays readable: once is enough
        if not exited.done():
            exited.set_result(None)

    # Starting blocks while the forkserver itself starts (once, or after it died): not on the event loop.
    starting = asyncio.ensure_future(asyncio.to_thread(process.start))
    messages: asyncio.Future[None] | None = None
    watching = False
    timed_out = False
    try:
        await asyncio.shield(starting)
        writer.close()  # the child holds the only writing end: its exit ends read_messages
        messages = asyncio.ensure_future(asyncio.to_thread(read_messages))
        # The sentinel becomes readable when the forkserver reports the child's exit.
        loop.add_reader(process.sentinel, on_exit)
        watching = True
        deadline = loop.time() + limits.timeout_s
        while not exited.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                timed_out = True
                break
            await asyncio.wait([exited], timeout=min(HEARTBEAT_EVERY_S, remaining))
            heartbeat(dict(progress))
    finally:
        if not starting.done():  # cancelled while starting: the child may start all the same
            await asyncio.wait([starting])
        writer.close()
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            if watching:
                loop.remove_reader(process.sentinel)
            if not exited.done():
                _kill(process.pid)
            # The forkserver reaps the child and reports its exit code; this waits for that report.
            await asyncio.to_thread(process.join)
        if messages is not None:
            await asyncio.gather(messages, return_exceptions=True)
        else:
            reader.close()
    returncode = process.exitcode
    process.close()

    if timed_out or returncode == -signal.SIGXCPU:
        raise DocumentError(
            "timeout",
            f"parsing took longer than the {limits.timeout_s:g} s limit and was stopped {_where(progress)}; "
            "the file may be built to stall parsers",
        )
    if "result" in final:
        return ParseResult.model_validate(final["result"])
    if "error" in final:
        raise DocumentError(final["error"]["code"], final["error"]["message"])
    if returncode == EXIT_OUT_OF_MEMORY:
        raise DocumentError(
            "out_of_memory",
            f"parsing needed more than the {limits.memory_mb} MB memory limit and was stopped "
            f"{_where(progress)}; the file may be a decompression bomb",
        )
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        raise DocumentError(
            "parser_crashed",
            f"the parser crashed on this file ({name}) {_where(progress)}; "
            f"it may have hit its {limits.memory_mb} MB memory limit",
        )
    # Not the document's fault as far as we can tell (a missing upload, a full disk): worth a retry.
    raise RuntimeError(f"the parser failed (exit {returncode}): {final.get('crash', '')}")


def _kill(pid: int | None) -> None:
    """Kills the child and whatever it started: it leads its own process group, once it got to make it."""
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            os.kill(pid, signal.SIGKILL)


def _where(progress: dict[str, int]) -> str:
    if not progress["of"]:
        return "while opening the file"
    return f"while reading page {min(progress['page'] + 1, progress['of'])} of {progress['of']}"


# --- the child side: read the file ------------------------------------------------------------


def _child_main(job: dict[str, Any], writer: Connection) -> None:
    """Entry point of the parser process: progress, then one result or error, as JSON messages."""
    os.setsid()  # its own process group: a kill reaches whatever it starts too
    # pypdf warns on stderr about every damaged object it works around: noise in the worker's log. What
    # matters reaches the parent as a message.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    limits = ParseLimits(**job["limits"])
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # The parent kills this process at the time limit; the CPU limit also ends it if the parent died.
    cpu_s = int(limits.timeout_s) + 10
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))

    def send(message: dict[str, Any]) -> None:
        writer.send_bytes(json.dumps(message).encode())

    output = Path(job["output"])
    out_of_memory = False
    try:
        parsed = parse_file(
            Path(job["path"]), job["media_type"], job["password"], limits,
            on_page=lambda page, of: send({"page": page, "of": of}),
        )  # fmt: skip
        write_atomic(output, parsed.model_dump_json().encode())
        send({"result": summarize(parsed, output).model_dump()})
    except DocumentError as exc:
        send({"error": {"code": exc.code, "message": str(exc)}})
    except MemoryError:
        out_of_memory = True
    except Exception:
        send({"crash": traceback.format_exc(limit=-8)[-4096:]})
        raise
    if out_of_memory:  # outside the except block, where the exception no longer holds the frames' memory
        sys.exit(EXIT_OUT_OF_MEMORY)


def summarize(parsed: ParsedDocument, pages_path: Path) -> ParseResult:
    return ParseResult(
        pages_path=str(pages_path),
        page_count=parsed.page_count,
        text_pages=sum(1 for page in parsed.pages if page.text),
        char_count=sum(len(page.text) for page in parsed.pages),
        page_errors=[PageError(page=p.page, error=p.error) for p in parsed.pages if p.error],
        warnings=parsed.warnings,
    )


def parse_file(
    path: Path,
    media_type: str,
    password: str | None,
    limits: ParseLimits,
    on_page: Callable[[int, int], None] | None = None,
) -> ParsedDocument:
    """The text of each page of a PDF, or of a text file split into pages at form feeds. Runs in the
    parser process; raises DocumentError for a file that cannot be read."""
    size = path.stat().st_size
    if size == 0:
        raise DocumentError("empty", "the file is empty")
    if size > limits.max_bytes:
        raise DocumentError(
            "too_large", f"the file has {_size(size)}; the limit is {_size(limits.max_bytes)}"
        )
    data = path.read_bytes()
    if media_type == "application/pdf":
        return _parse_pdf(data, password, limits, on_page)
    return _parse_text(data, limits)


def _parse_pdf(
    data: bytes, password: str | None, limits: ParseLimits, on_page: Callable[[int, int], None] | None
) -> ParsedDocument:
    # Readers accept a header anywhere in the first kilobyte; so do we.
    if data.find(b"%PDF-", 0, 1024) < 0:
        raise DocumentError(
            "not_pdf", f"the file is not a PDF: it does not start with %PDF-{_looks_like(data)}"
        )
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            _decrypt(reader, password)
        page_count = len(reader.pages)
    except DocumentError:
        raise
    except LimitReachedError as exc:
        raise DocumentError(
            "too_large",
            f"the PDF's structure is past the parser's limits ({exc}); it may be a decompression bomb",
        ) from exc
    except RecursionError as exc:
        raise DocumentError("malformed", "the PDF's structure nests too deeply (it may loop)") from exc
    except Exception as exc:
        _raise_if_out_of_memory(exc)
        raise DocumentError(
            "malformed", f"the PDF is damaged or truncated and cannot be read ({_describe(exc)})"
        ) from exc
    if page_count == 0:
        raise DocumentError("empty", "the PDF has no pages")
    if page_count > limits.max_pages:
        raise DocumentError(
            "too_many_pages", f"the PDF has {page_count} pages; the limit is {limits.max_pages}"
        )

    if on_page is not None:
        on_page(0, page_count)
    pages = []
    for number in range(1, page_count + 1):
        pages.append(_read_page(reader, number))
        if on_page is not None:
            on_page(number, page_count)
    if not any(page.text for page in pages):
        raise DocumentError("no_text", _no_text_reason(pages))
    return ParsedDocument(page_count=page_count, pages=pages, warnings=_page_warnings(pages))


def _decrypt(reader: Any, password: str | None) -> None:
    from pypdf import PasswordType

    try:
        # Many PDFs are encrypted only against editing: their user password is empty.
        for candidate in (password, ""):
            if candidate is not None and reader.decrypt(candidate) != PasswordType.NOT_DECRYPTED:
                return
    except NotImplementedError as exc:  # an encryption method pypdf does not know
        raise DocumentError(
            "encrypted", f"the PDF is encrypted with a method this server cannot open ({exc})"
        ) from exc
    if password is None:
        raise DocumentError("encrypted", "the PDF is encrypted: give its password to read it")
    raise DocumentError("wrong_password", "the password is not this PDF's: it cannot be decrypted")


def _read_page(reader: Any, number: int) -> PageText:
    from pypdf.errors import LimitReachedError

    try:
        page = reader.pages[number - 1]
        raw = page.extract_text() or ""
    except LimitReachedError:
        return PageText(page=number, error=INFLATES_TOO_FAR)
    except RecursionError:
        return PageText(page=number, error="its content nests too deeply to read (it may loop)")
    except Exception as exc:
        _raise_if_out_of_memory(exc)
        return PageText(page=number, error=f"its text could not be read ({_describe(exc)})")
    text = clean_text(raw)
    if text:
        return PageText(page=number, text=text)
    return PageText(page=number, error=SCANNED if _has_images(page) else BLANK)


def _has_images(page: Any) -> bool:
    try:
        return len(page.images) > 0
    except Exception as exc:
        _raise_if_out_of_memory(exc)
        return False


def _raise_if_out_of_memory(exc: Exception) -> None:
    # MemoryError is an Exception like any other; zlib reports its own failed allocations as zlib.error.
    if isinstance(exc, MemoryError) or (isinstance(exc, zlib.error) and "memory" in str(exc)):
        raise MemoryError from exc


def _no_text_reason(pages: list[PageText]) -> str:
    scanned = [p.page for p in pages if p.error == SCANNED]
    blank = [p.page for p in pages if p.error == BLANK]
    parts = []
    if scanned:
        verb = "looks" if len(scanned) == 1 else "look"
        parts.append(f"no text layer: {_page_list(scanned)} {verb} scanned, and OCR is not available")
    if blank:
        parts.append(f"{_page_list(blank)} {'is' if len(blank) == 1 else 'are'} blank")
    parts.extend(_failures(pages))
    return "; ".join(parts) if scanned else "the document has no text: " + "; ".join(parts)


def _page_warnings(pages: list[PageText]) -> list[str]:
    """What a user should know about a document that has text: the pages that will not be searchable."""
    scanned = [p.page for p in pages if p.error == SCANNED]
    warnings = []
    if scanned:
        verb = "has" if len(scanned) == 1 else "have"
        warnings.append(f"{_page_list(scanned)} {verb} no text layer (scanned?) and will not be searchable")
    return warnings + _failures(pages)


def _failures(pages: list[PageText]) -> list[str]:
    by_error: dict[str, list[int]] = {}
    for page in pages:
        if page.error and page.error not in (SCANNED, BLANK):
            by_error.setdefault(page.error, []).append(page.page)
    return [f"{_page_list(numbers)}: {error}" for error, numbers in list(by_error.items())[:5]]


def _page_list(numbers: list[int], most: int = 8) -> str:
    """'page 3', 'pages 1-3', 'pages 1-3, 5, 7-9', cut short past `most` ranges."""
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:most]]
    more = f", … ({len(numbers)} pages)" if len(ranges) > most else ""
    return ("page " if len(numbers) == 1 else "pages ") + ", ".join(shown) + more


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def _size(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"


_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (or a Word, Excel or OpenDocument file)"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"),
    (b"{\\rtf", "an RTF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def _looks_like(data: bytes) -> str:
    head = data[:1024].lstrip()
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f" (it looks like {kind})"
    if head[:15].lower().startswith((b"<!doctype html", b"<html")):
        return " (it looks like an HTML page)"
    return ""


# --- text files -------------------------------------------------------------------------------

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_CP1251_LETTER = re.compile(rb"[\xa8\xb8\xc0-\xff]")
_CP1251_WORD = re.compile(rb"[\xa8\xb8\xc0-\xff]{3,}")


def _parse_text(data: bytes, limits: ParseLimits) -> ParsedDocument:
    text, _, warnings = decode_text(data)
    raw_pages = text.split("\f")
    if len(raw_pages) > 1 and not raw_pages[-1].strip():
        raw_pages.pop()  # a form feed that ends the last page starts no new one
    if len(raw_pages) > limits.max_pages:
        raise DocumentError(
            "too_many_pages",
            f"the text has {len(raw_pages)} pages (separated by form feeds); the limit is {limits.max_pages}",
        )
    pages = []
    for number, raw in enumerate(raw_pages, 1):
        cleaned = clean_text(raw)
        pages.append(PageText(page=number, text=cleaned) if cleaned else PageText(page=number, error=BLANK))
    if not any(page.text for page in pages):
        raise DocumentError("empty", "the file has no text: only white space")
    return ParsedDocument(page_count=len(pages), pages=pages, warnings=warnings)


def decode_text(data: bytes) -> tuple[str, str, list[str]]:
    """Text, the encoding it was read in, and warnings. UTF-8 (with or without a BOM) and UTF-16 with a
    BOM; other bytes are read as Windows-1251 when they form Cyrillic words, else as Windows-1252
    (Latin-1 for bytes it lacks). Binary files are refused."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _check_text(data[len(bom) :].decode(codec, errors="replace")), codec, []
    sample = data[: 1024 * 1024]
    if sample.count(0) > len(sample) // 100:
        raise DocumentError("not_text", f"the file is binary, not text{_looks_like(data)}")
    text = data.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd") - data.count("\ufffd".encode())
    if invalid == 0:
        return _check_text(text), "utf-8", []
    # A few bad bytes in a UTF-8 file (a cut-off last character) do not make it another encoding.
    if invalid <= max(1, len(text) // 1000):
        warning = f"{invalid} bytes were not valid UTF-8 and were replaced"
        return _check_text(text), "utf-8", [warning]
    letters = len(_CP1251_LETTER.findall(sample))
    in_words = sum(len(word) for word in _CP1251_WORD.findall(sample))
    # Russian in cp1251 is words of high bytes; French or German in cp1252 has one accented letter at a time.
    encoding = "cp1251" if letters and in_words >= 0.6 * letters else "cp1252"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        encoding = "latin-1"
        text = data.decode(encoding)
    return _check_text(text), encoding, [f"the file is not UTF-8: it was read as {encoding}"]


def _check_text(text: str) -> str:
    sample = text[: 1024 * 1024]
    if len(_CONTROL.findall(sample)) > max(8, len(sample) // 100):
        raise DocumentError("not_text", "the file does not look like text: it is full of control characters")
    return text


# --- cleaning ---------------------------------------------------------------------------------

_NEWLINES = str.maketrans({"\r": "\n", "\v": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n\n"})
_SOFT_HYPHEN_BREAK = re.compile(r"\u00ad[ \t]*\n[ \t]*")
_HYPHEN_BREAK = re.compile(r"([^\W\d_])-[ \t]*\n[ \t]*([^\W\d_])")
_CLEAN = str.maketrans(
    {
        **{code: " " for code in range(0x20) if chr(code) not in "\n\f"},
        **{code: " " for code in range(0x7F, 0xA0)},
        "\x00": None,
        "\f": "\n\n",
        "\u00a0": " ", "\u202f": " ", "\u205f": " ", "\u3000": " ",
        **{code: " " for code in range(0x2000, 0x200B)},
        # Invisible: soft hyphens left inside lines, zero-width spaces, word joiners, stray BOMs.
        "\u00ad": None, "\u200b": None, "\u2060": None, "\ufeff": None,
        "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
        "\ufb05": "st", "\ufb06": "st",
    }
)  # fmt: skip
_LINE_EDGES = re.compile(r" *\n *")
_SPACES = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


def _join_hyphenated(match: re.Match[str]) -> str:
    # "exam-\nple" is one word broken at the line's end; "Jean-\nPaul" keeps its hyphen.
    before, after = match.group(1), match.group(2)
    return before + after if after.islower() else f"{before}-{after}"


def clean_text(text: str) -> str:
    """Extracted text made fit for search, and still faithful: words broken at line ends joined, white
    space normalised (single spaces, single blank lines between paragraphs), NULs, control and invisible
    characters dropped, ligatures spelled out, Unicode in NFC."""
    text = text.replace("\r\n", "\n").translate(_NEWLINES)
    text = _SOFT_HYPHEN_BREAK.sub("", text)
    text = _HYPHEN_BREAK.sub(_join_hyphenated, text)
    text = text.translate(_CLEAN)
    text = _LINE_EDGES.sub("\n", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return unicodedata.normalize("NFC", text.strip())
