"""Parsing and chunking activities on real-world files and on files built to hurt a parser.

Every real-world file listed in tests/data/documents/README.md ends parsed or refused with its own
reason; those files are not part of this repository: the tests that need them look in TEST_DOCUMENTS_DIR
(default: tests/data/documents) and skip when they are not there. Hostile files (a looping page tree, a
flate bomb, pages that eat memory or time) are built here and stopped within their limits in the parser's
child process, and this test process carries on.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import random
import resource
import shutil
import time
import zlib
from pathlib import Path

import pytest
from fpdf import FPDF
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.documents import (
    BLANK,
    INFLATES_TOO_FAR,
    SCANNED,
    DocumentActivities,
    DocumentError,
    clean_text,
    decode_text,
    pages_path_for,
)
from core.chunking import load_tokenizer, read_chunks
from core.schemas import ChunkRequest, ParsedDocument, ParseRequest, ParseResult
from core.settings import Settings
from core.token_counts import count_tokens

DATA = Path(
    os.environ.get("TEST_DOCUMENTS_DIR") or Path(__file__).resolve().parent.parent / "data" / "documents"
)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, var_dir=tmp_path, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def documents(tmp_path: Path) -> DocumentActivities:
    return DocumentActivities(make_settings(tmp_path))


def upload(tmp_path: Path, name: str, data: bytes | None = None) -> Path:
    """A copy in tmp_path, as the API would store it: the parser writes its output next to it."""
    path = tmp_path / name
    if data is None:
        if not (DATA / name).is_file():
            pytest.skip(f"{name} is not in {DATA}: see tests/data/documents/README.md")
        shutil.copyfile(DATA / name, path)
    else:
        path.write_bytes(data)
    return path


async def parse(
    documents: DocumentActivities,
    path: Path,
    media_type: str = "application/pdf",
    password: str | None = None,
    env: ActivityEnvironment | None = None,
) -> ParseResult:
    request = ParseRequest(path=str(path), media_type=media_type, password=password)  # type: ignore[arg-type]
    return await (env or ActivityEnvironment()).run(documents.parse_document, request)


async def refusal(documents: DocumentActivities, path: Path, **kwargs: object) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        await parse(documents, path, **kwargs)  # type: ignore[arg-type]
    error = raised.value
    assert error.type == "DocumentError"
    assert error.non_retryable
    return error


def code_of(error: ApplicationError) -> str:
    return error.details[0]["code"]


def parsed_pages(result: ParseResult) -> ParsedDocument:
    return ParsedDocument.model_validate_json(Path(result.pages_path).read_bytes())


# --- synthetic PDFs ---------------------------------------------------------------------------


def build_pdf(objects: list[bytes]) -> bytes:
    """A PDF with a correct cross-reference table; object 1 is the catalog."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def stream(data: bytes, entries: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n%s\nendstream" % (len(data), entries, data)


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def pages_pdf(contents: list[bytes], filters: list[bytes] | None = None) -> bytes:
    """One page per (already encoded) content stream, FlateDecode unless `filters` says otherwise;
    object 3 is a Helvetica font."""
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(contents)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(contents)),
        FONT,
    ]
    for i, content in enumerate(contents):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(stream(content, filters[i] if filters else b"/Filter /FlateDecode"))
    return build_pdf(objects)


def zlib_of_zeros(size: int) -> bytes:
    """A zlib stream of `size` zero bytes, built without compressing them: 1 MiB compressed once, its
    byte-aligned deflate blocks repeated, and the checksum computed from the formula."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = b"\x03\x00"  # an empty final block with fixed codes
    adler = ((size % 65521) << 16) | 1  # Adler-32 of zeros: A stays 1, B adds 1 per byte
    return b"\x78\xda" + block * (size >> 20) + final + adler.to_bytes(4, "big")


def hundred_page_pdf(pages: int = 100) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    rng = random.Random(100)
    words = "the of search index parser page text document model token chunk query worker limit".split()
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 5, f"Page {number} of the long report.", new_x="LMARGIN", new_y="NEXT")
        for _ in range(5):
            sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))).capitalize() + "."
                         for _ in range(5)]  # fmt: skip
            pdf.multi_cell(0, 5, " ".join(sentences), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    return bytes(pdf.output())


@pytest.fixture(scope="module")
def long_pdf() -> bytes:
    return hundred_page_pdf()


@pytest.fixture(scope="module")
def short_pdf() -> bytes:
    return hundred_page_pdf(pages=1)


def png_image() -> bytes:
    """A 16 by 16 grey PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = (16).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    pixels = zlib.compress(b"".join(b"\x00" + bytes([128] * 16) for _ in range(16)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        found.append((int(entry.name), ppid, command))
    return found


def parser_server() -> int | None:
    """The process this test process forks its parsers from, if it runs."""
    servers = [
        pid
        for pid, ppid, command in processes()
        if ppid == os.getpid()
        and b"multiprocessing.forkserver" in command
        and b"activities.documents" in command
    ]
    assert len(servers) <= 1, servers
    return servers[0] if servers else None


def parser_children() -> list[int]:
    """Parser processes started by this test process and still alive."""
    server = parser_server()
    return [pid for pid, ppid, _ in processes() if server is not None and ppid == server]


# --- real-world files -------------------------------------------------------------------------

# file, password, pages, pages with text, words from the text
PARSED = [
    ("crazyones.pdf", None, 1, 1, "to the crazy ones. The misfits. The rebels."),
    ("minimal-document.pdf", None, 1, 1, "no sea takimata sanctus est"),
    ("pdflatex-4-pages.pdf", None, 4, 4, "Is there a difference between this text and"),
    ("multicolumn.pdf", None, 3, 3, "Two-Column Document with Lorem Ipsum"),
    ("google-doc-document.pdf", None, 1, 1, "Beautiful is better than ugly."),
    ("Seige_of_Vicksburg_Sample_OCR.pdf", None, 6, 6, "THE SIEGE OF VICKSBURG"),
    ("test_file_two_pages_international.pdf", None, 2, 2, "Russian: Привет. Как дела?"),
    ("test_file_three_pages_two_empty_en.pdf", None, 3, 1, "test pdf file with 3 pages total"),
    ("imagemagick-images.pdf", None, 6, 4, "Background"),
    ("r2-empty-password.pdf", None, 1, 1, "pdf encryption test"),
    ("r6-both-passwords.pdf", "foo", 1, 1, "pdf encryption test"),
    ("r6-both-passwords.pdf", "bar", 1, 1, "pdf encryption test"),
    ("libreoffice-writer-password.pdf", "openpassword", 1, 1, "Lorem ipsum"),
]

# file, password, code, words from the message
REFUSED = [
    ("grayscale-image.pdf", None, "no_text", "no text layer: page 1 looks scanned, and OCR is not available"),
    ("empty.pdf", None, "no_text", "the document has no text: page 1 is blank"),
    ("libreoffice-writer-password.pdf", None, "encrypted", "the PDF is encrypted: give its password"),
    ("libreoffice-writer-password.pdf", "guess", "wrong_password", "the password is not this PDF's"),
    ("r6-both-passwords.pdf", None, "encrypted", "give its password"),
    ("Pages-tree-refs.pdf", None, "malformed", "damaged or truncated and cannot be read (Detected cyclic"),
    ("PDFBOX-3148-2-fuzzed.pdf", None, "malformed", "damaged or truncated and cannot be read (Trailer"),
    ("REDHAT-1531897-0.pdf", None, "malformed", "damaged or truncated and cannot be read"),
    ("smile.png", None, "not_pdf", "not a PDF: it does not start with %PDF- (it looks like a PNG image)"),
]


@pytest.mark.parametrize(("name", "password", "pages", "text_pages", "words"), PARSED)
async def test_real_world_pdf_is_parsed(
    documents: DocumentActivities, tmp_path: Path, name: str, password: str | None,
    pages: int, text_pages: int, words: str,
) -> None:  # fmt: skip
    path = upload(tmp_path, name)
    result = await parse(documents, path, password=password)
    assert (result.page_count, result.text_pages) == (pages, text_pages)
    assert result.pages_path == str(pages_path_for(path))
    parsed = parsed_pages(result)
    assert [page.page for page in parsed.pages] == list(range(1, pages + 1))
    assert words in "\n".join(page.text for page in parsed.pages)
    assert result.char_count == sum(len(page.text) for page in parsed.pages)
    for page in parsed.pages:
        assert bool(page.text) != bool(page.error)
        assert "\x00" not in page.text and "  " not in page.text and "\n\n\n" not in page.text


@pytest.mark.parametrize(("name", "password", "code", "words"), REFUSED)
async def test_real_world_file_is_refused_with_its_reason(
    documents: DocumentActivities, tmp_path: Path, name: str, password: str | None, code: str, words: str
) -> None:
    error = await refusal(documents, upload(tmp_path, name), password=password)
    assert code_of(error) == code
    assert words in error.message


async def test_mixed_document_reports_its_scanned_pages(
    documents: DocumentActivities, tmp_path: Path
) -> None:
    result = await parse(documents, upload(tmp_path, "imagemagick-images.pdf"))
    assert [(error.page, error.error) for error in result.page_errors] == [(4, SCANNED), (5, SCANNED)]
    assert result.warnings == ["pages 4-5 have no text layer (scanned?) and will not be searchable"]


async def test_blank_pages_are_marked_but_not_warned_about(
    documents: DocumentActivities, tmp_path: Path
) -> None:
    result = await parse(documents, upload(tmp_path, "test_file_three_pages_two_empty_en.pdf"))
    assert [(error.page, error.error) for error in result.page_errors] == [(1, BLANK), (3, BLANK)]
    assert result.warnings == []


async def test_words_broken_at_line_ends_are_joined(documents: DocumentActivities, tmp_path: Path) -> None:
    text = "\n".join(
        p.text for p in parsed_pages(await parse(documents, upload(tmp_path, "multicolumn.pdf"))).pages
    )
    for word in ("adipiscing", "consectetuer", "tristique", "fermentum", "Pellentesque"):
        assert word in text
    assert "adip-" not in text and "fer-\n" not in text


async def test_real_world_jbig2_bomb_is_contained(documents: DocumentActivities, tmp_path: Path) -> None:
    started = time.monotonic()
    error = await refusal(documents, upload(tmp_path, "bomb_giant.pdf"))
    # Without jbig2dec (as here) the page cannot be decoded at all; with it, the memory cap stops it.
    assert code_of(error) in ("no_text", "out_of_memory")
    assert time.monotonic() - started < 30


# --- broken and hostile files -----------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
async def test_truncated_pdf_is_refused_as_damaged(
    documents: DocumentActivities, tmp_path: Path, short_pdf: bytes, fraction: float
) -> None:
    path = upload(tmp_path, "cut.pdf", short_pdf[: int(len(short_pdf) * fraction)])
    error = await refusal(documents, path)
    assert code_of(error) == "malformed"
    assert error.message.startswith("the PDF is damaged or truncated and cannot be read")


async def test_empty_file_is_refused(documents: DocumentActivities, tmp_path: Path) -> None:
    for media_type in ("application/pdf", "text/plain"):
        error = await refusal(documents, upload(tmp_path, "empty.bin", b""), media_type=media_type)
        assert (code_of(error), error.message) == ("empty", "the file is empty")


async def test_a_missing_upload_is_a_failure_worth_retrying(
    documents: DocumentActivities, tmp_path: Path
) -> None:
    # Not the document's fault (the file is gone, a disk failed): no DocumentError, so Temporal retries.
    with pytest.raises(RuntimeError) as raised:
        await parse(documents, tmp_path / "gone.pdf")
    assert str(raised.value).startswith("the parser failed (exit 1)")
    assert "FileNotFoundError" in str(raised.value)
    assert parser_children() == []


async def test_file_over_the_size_limit_is_refused(tmp_path: Path, long_pdf: bytes) -> None:
    documents = DocumentActivities(make_settings(tmp_path, upload_max_bytes=100 * 1024))
    error = await refusal(documents, upload(tmp_path, "long.pdf", long_pdf))
    assert code_of(error) == "too_large"
    assert error.message == f"the file has {len(long_pdf) / 1024:.0f} KB; the limit is 100 KB"


async def test_image_sent_as_pdf_is_refused(documents: DocumentActivities, tmp_path: Path) -> None:
    error = await refusal(documents, upload(tmp_path, "photo.pdf", png_image()))
    assert code_of(error) == "not_pdf"
    assert error.message == "the file is not a PDF: it does not start with %PDF- (it looks like a PNG image)"


@pytest.mark.parametrize(
    "kids",
    [b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>", b"<< /Type /Pages /Kids [3 0 R] /Count 9 >>"],
    ids=["kids-is-itself", "two-node-cycle"],
)
async def test_looping_page_tree_is_refused(
    documents: DocumentActivities, tmp_path: Path, kids: bytes
) -> None:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        kids,
        b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R 3 0 R] /Count 9 >>",
    ]
    started = time.monotonic()
    error = await refusal(documents, upload(tmp_path, "loop.pdf", build_pdf(objects)))
    assert code_of(error) == "malformed"
    assert "cyclic page references" in error.message
    assert time.monotonic() - started < 10


async def test_flate_bomb_is_stopped(documents: DocumentActivities, tmp_path: Path) -> None:
    # 2 GiB of zeros, deflated twice: a 2 MiB stream inside a few kilobytes.
    inner = zlib_of_zeros(2 << 30)
    assert zlib.decompressobj().decompress(inner, 1 << 20) == bytes(1 << 20)
    bomb = pages_pdf([zlib.compress(inner, 9)], filters=[b"/Filter [/FlateDecode /FlateDecode]"])
    assert len(bomb) < 20_000
    started = time.monotonic()
    error = await refusal(documents, upload(tmp_path, "bomb.pdf", bomb))
    assert code_of(error) == "no_text"
    assert error.message == f"the document has no text: page 1: {INFLATES_TOO_FAR}"
    assert time.monotonic() - started < 10


async def test_a_bomb_page_does_not_sink_the_other_pages(
    documents: DocumentActivities, tmp_path: Path
) -> None:
    text = zlib.compress(b"BT /F1 12 Tf 72 700 Td (Readable page) Tj ET")
    bomb = zlib.compress(zlib_of_zeros(1 << 30), 9)
    flate, twice = b"/Filter /FlateDecode", b"/Filter [/FlateDecode /FlateDecode]"
    mixed = pages_pdf([text, bomb, text], filters=[flate, twice, flate])
    result = await parse(documents, upload(tmp_path, "mixed.pdf", mixed))
    assert (result.page_count, result.text_pages) == (3, 2)
    assert [(e.page, e.error) for e in result.page_errors] == [(2, INFLATES_TOO_FAR)]
    assert result.warnings == [f"page 2: {INFLATES_TOO_FAR}"]


def memory_hog_pdf(pages: int = 16) -> bytes:
    """Pages each under every per-stream limit of the parser, whose decoded content (64 MB of inline
    image a page) piles up: past a few pages, more memory than the parser may have."""
    side = 8000
    content = b"q BI /W %d /H %d /BPC 8 /CS /G ID " % (side, side) + bytes(side * side) + b"\nEI Q\n"
    return pages_pdf([zlib.compress(content, 9)] * pages)


async def test_memory_hog_is_stopped_at_the_memory_cap(tmp_path: Path) -> None:
    documents = DocumentActivities(make_settings(tmp_path, parse_memory_limit_mb=400))
    path = upload(tmp_path, "hog.pdf", memory_hog_pdf())
    own_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    error = await refusal(documents, path)
    assert code_of(error) == "out_of_memory"
    assert error.message.startswith("parsing needed more than the 400 MB memory limit and was stopped while")
    assert time.monotonic() - started < 30
    # The memory was the child's: this process did not grow by it.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - own_memory < 100_000  # KiB
    assert parser_children() == []


def slow_pdf(pages: int = 3) -> bytes:
    """Content streams of a few million no-op operators: cheap to store, slow to interpret."""
    content = b"BT /F1 12 Tf 72 700 Td (Slow) Tj ET\n" + b"1 0 0 1 0 0 cm\n" * 4_000_000
    return pages_pdf([zlib.compress(content, 6)] * pages)


async def test_endless_content_is_stopped_at_the_time_limit(tmp_path: Path) -> None:
    documents = DocumentActivities(make_settings(tmp_path, parse_timeout_s=2.5))
    heartbeats: list[dict[str, int]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: heartbeats.append(details[0])
    started = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        await parse(documents, upload(tmp_path, "slow.pdf", slow_pdf()), env=env)
    elapsed = time.monotonic() - started
    assert code_of(raised.value) == "timeout"
    assert raised.value.message.startswith("parsing took longer than the 2.5 s limit and was stopped while")
    assert 2.5 <= elapsed < 6
    assert len(heartbeats) >= 2
    assert heartbeats[-1]["of"] == 3  # the child said how far it got
    assert parser_children() == []
    # Only the child was killed: the process parsers are forked from serves the next file.
    server = parser_server()
    assert server is not None
    result = await parse(
        documents, upload(tmp_path, "next.txt", b"After the slow one."), media_type="text/plain"
    )
    assert result.text_pages == 1
    assert parser_server() == server


async def test_cancelling_the_activity_kills_the_parser(tmp_path: Path) -> None:
    documents = DocumentActivities(make_settings(tmp_path, parse_timeout_s=60))
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: env.cancel()  # cancel at the first heartbeat, as a job cancel would
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await parse(documents, upload(tmp_path, "slow.pdf", slow_pdf()), env=env)
    assert time.monotonic() - started < 10
    assert parser_children() == []


# --- long documents ---------------------------------------------------------------------------


async def test_hundred_page_pdf_is_parsed_and_its_text_stays_out_of_the_payload(
    documents: DocumentActivities, tmp_path: Path, long_pdf: bytes
) -> None:
    path = upload(tmp_path, "long.pdf", long_pdf)
    heartbeats: list[dict[str, int]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: heartbeats.append(details[0])
    started = time.perf_counter()
    result = await parse(documents, path, env=env)
    elapsed = time.perf_counter() - started
    print(
        f"\nparsed a {len(long_pdf) // 1024} KB, 100-page text PDF in {elapsed:.2f} s "
        f"({result.char_count} characters)"
    )
    assert (result.page_count, result.text_pages) == (100, 100)
    parsed = parsed_pages(result)
    assert all(page.text.startswith(f"Page {page.page} of the long report.") for page in parsed.pages)
    # What travels through Temporal is counts and a path, whatever the document's length.
    assert len(result.model_dump_json()) < 1000 < result.char_count


async def test_too_many_pages_are_refused(tmp_path: Path, long_pdf: bytes) -> None:
    documents = DocumentActivities(make_settings(tmp_path, upload_max_pages=50))
    error = await refusal(documents, upload(tmp_path, "long.pdf", long_pdf))
    assert (code_of(error), error.message) == ("too_many_pages", "the PDF has 100 pages; the limit is 50")


async def test_parsed_pages_are_chunked_by_the_embedders_tokenizer(
    documents: DocumentActivities, tmp_path: Path, long_pdf: bytes
) -> None:
    parsed = await parse(documents, upload(tmp_path, "long.pdf", long_pdf))
    env = ActivityEnvironment()
    started = time.perf_counter()
    result = await env.run(documents.chunk_document, ChunkRequest(pages_path=parsed.pages_path))
    elapsed = time.perf_counter() - started
    print(f"\nchunked 100 pages into {result.chunk_count} chunks in {elapsed:.2f} s")
    assert not result.truncated and result.warnings == []
    chunks = list(read_chunks(result.chunks_path))
    assert [chunk.chunk_index for chunk in chunks] == list(range(result.chunk_count))
    assert {chunk.page for chunk in chunks} == set(range(1, 101))
    assert result.token_count == sum(chunk.token_count for chunk in chunks)
    tokenizer = load_tokenizer(documents.settings.model_path("all-MiniLM-L6-v2") / "tokenizer.json")
    assert max(len(tokenizer.encode(chunk.text).ids) for chunk in chunks) <= 256
    assert len(result.model_dump_json()) < 1000
    assert Path(result.chunks_path).parent == tmp_path


async def test_a_document_for_an_openai_embedder_is_chunked_in_openais_tokens(
    documents: DocumentActivities, tmp_path: Path, long_pdf: bytes
) -> None:
    parsed = await parse(documents, upload(tmp_path, "long.pdf", long_pdf))
    request = ChunkRequest(pages_path=parsed.pages_path, embedder="openai/text-embedding-3-small")
    result = await ActivityEnvironment().run(documents.chunk_document, request)
    chunks = list(read_chunks(result.chunks_path))
    # Counted by tiktoken's cl100k_base, the model's own encoding, read offline.
    counts = [count_tokens("text-embedding-3-small", chunk.text) for chunk in chunks]
    assert [chunk.token_count for chunk in chunks] == counts
    assert max(counts) <= documents.settings.max_chunk_tokens
    # Another tokenizer, another chunk file: the local embedder's chunks are not these.
    local_request = ChunkRequest(pages_path=parsed.pages_path)
    local = await ActivityEnvironment().run(documents.chunk_document, local_request)
    assert local.chunks_path != result.chunks_path


async def test_chunk_cap_is_reported_not_silent(
    documents: DocumentActivities, tmp_path: Path, long_pdf: bytes
) -> None:
    parsed = await parse(documents, upload(tmp_path, "long.pdf", long_pdf))
    request = ChunkRequest(pages_path=parsed.pages_path, max_chunks=10)
    result = await ActivityEnvironment().run(documents.chunk_document, request)
    assert (result.chunk_count, result.truncated) == (10, True)
    assert len(result.warnings) == 1 and result.warnings[0].startswith("chunk limit reached")
    assert len(list(read_chunks(result.chunks_path))) == 10
    # Other limits, another chunk file: the first one is still there for whoever reads it.
    other = await ActivityEnvironment().run(
        documents.chunk_document, ChunkRequest(pages_path=parsed.pages_path, max_chunk_tokens=100)
    )
    assert other.chunks_path != result.chunks_path
    assert len(list(read_chunks(result.chunks_path))) == 10


async def test_chunk_limits_that_cannot_work_are_refused(
    documents: DocumentActivities, tmp_path: Path, short_pdf: bytes
) -> None:
    parsed = await parse(documents, upload(tmp_path, "short.pdf", short_pdf))
    request = ChunkRequest(pages_path=parsed.pages_path, max_chunk_tokens=100, chunk_overlap_tokens=80)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(documents.chunk_document, request)
    assert raised.value.type == "InvalidChunkLimits" and raised.value.non_retryable


# --- text files -------------------------------------------------------------------------------

RUSSIAN = "Документ загружен. Поиск по страницам работает, ответы ссылаются на источник.\nЁлка и ёж."
FRENCH = "Le café est déjà prêt. Où est l'élève ? « Voilà », dit-il — à bientôt."


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [
        (RUSSIAN.encode(), RUSSIAN, "utf-8"),
        (codecs.BOM_UTF8 + RUSSIAN.encode(), RUSSIAN, "utf-8"),
        (codecs.BOM_UTF16_LE + RUSSIAN.encode("utf-16-le"), RUSSIAN, "utf-16-le"),
        (codecs.BOM_UTF16_BE + FRENCH.encode("utf-16-be"), FRENCH, "utf-16-be"),
        (RUSSIAN.encode("cp1251"), RUSSIAN, "cp1251"),
        (FRENCH.encode("cp1252"), FRENCH, "cp1252"),
        ("Straße, Übermaß, naïve".encode("latin-1") + b" \x81", "Straße, Übermaß, naïve \x81", "latin-1"),
    ],
    ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "cp1251", "cp1252", "latin1"],
)
def test_text_encodings(data: bytes, text: str, encoding: str) -> None:
    decoded, found, warnings = decode_text(data)
    assert (decoded, found) == (text, encoding)
    assert bool(warnings) == (encoding in ("cp1251", "cp1252", "latin-1"))


def test_a_few_bad_bytes_do_not_make_utf8_another_encoding() -> None:
    data = RUSSIAN.encode() * 20 + "ё".encode()[:1]  # cut in the middle of the last character
    decoded, encoding, warnings = decode_text(data)
    assert encoding == "utf-8" and decoded.startswith(RUSSIAN)
    assert warnings == ["1 bytes were not valid UTF-8 and were replaced"]


@pytest.mark.parametrize(
    "data",
    [
        png_image(),
        hundred_page_pdf(pages=1),
        random.Random(5).randbytes(4096),
    ],
    ids=["png", "pdf", "random"],
)
def test_binary_is_not_text(data: bytes) -> None:
    with pytest.raises(DocumentError) as raised:
        decode_text(data)
    assert raised.value.code == "not_text"


async def test_text_file_is_split_into_pages_at_form_feeds(
    documents: DocumentActivities, tmp_path: Path
) -> None:
    text = f"First page.\n\n\n\nStill first.\fSecond\tpage, ﬁne.\f \f{RUSSIAN}\f"
    result = await parse(documents, upload(tmp_path, "notes.txt", text.encode("cp1251", errors="replace")),
                         media_type="text/plain")  # fmt: skip
    assert result.warnings == ["the file is not UTF-8: it was read as cp1251"]
    pages = parsed_pages(result).pages
    assert [(p.page, p.text, p.error) for p in pages] == [
        (1, "First page.\n\nStill first.", None),
        (2, "Second page, ?ne.", None),  # cp1251 has no ligature: the writer replaced it
        (3, "", BLANK),
        (4, RUSSIAN, None),
    ]


async def test_markdown_keeps_its_markup(documents: DocumentActivities, tmp_path: Path) -> None:
    text = "# Title\n\n- item one\n- item two\n\n```python\nprint('x')\n```\n"
    result = await parse(documents, upload(tmp_path, "readme.md", text.encode()), media_type="text/markdown")
    assert parsed_pages(result).pages[0].text == text.strip()


async def test_white_space_only_text_is_refused(documents: DocumentActivities, tmp_path: Path) -> None:
    error = await refusal(documents, upload(tmp_path, "blank.txt", b" \n\t\f \n"), media_type="text/plain")
    assert (code_of(error), error.message) == ("empty", "the file has no text: only white space")


async def test_binary_sent_as_text_is_refused(documents: DocumentActivities, tmp_path: Path) -> None:
    error = await refusal(documents, upload(tmp_path, "photo.png", png_image()), media_type="text/plain")
    assert (code_of(error), error.message) == (
        "not_text",
        "the file is binary, not text (it looks like a PNG image)",
    )


# --- cleaning ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("infor-\nmation retrieval", "information retrieval"),
        ("Jean-\nPaul Sartre", "Jean-Paul Sartre"),
        ("разде-\nление строк", "разделение строк"),
        ("soft\u00ad\nhyphen and in\u00adline", "softhyphen and inline"),
        ("a\x00b\x03c", "ab c"),
        ("\ufb01nal \ufb02oor", "final floor"),
        ("  two   spaces\u00a0and\ttab \n  next line  ", "two spaces and tab\nnext line"),
        ("para one\r\n\r\n\r\n\r\npara two\rline", "para one\n\npara two\nline"),
        ("page\fbreak", "page\n\nbreak"),
        ("cafe\u0301", "café"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("3-\n4 pages, x-\nRay", "3-\n4 pages, x-Ray"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
