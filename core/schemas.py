"""Inputs and outputs of the API, the workflows and the activities.

Workflow and activity payloads are pydantic models carried by Temporal's pydantic data converter.
Fields are only ever added with defaults, so histories of running workflows stay readable.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar, get_args

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator

ProviderName = Literal["local", "openai", "gemini", "ollama"]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerationParams(BaseModel):
    """Sampling parameters. The optional ones are None when not asked for; a provider that cannot
    honour one that is set refuses the request (422) instead of dropping it."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=8192)
    stop: list[str] | None = Field(None, max_length=4)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    response_format: Literal["text", "json_object"] | None = None

    def optional_params_set(self) -> list[str]:
        optional = ("stop", "seed", "presence_penalty", "frequency_penalty", "response_format")
        return [name for name in optional if getattr(self, name) is not None]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


# --- activities -------------------------------------------------------------------------------


class GenerateInput(BaseModel):
    provider: ProviderName
    model: str | None = None
    messages: list[Message]
    params: GenerationParams = GenerationParams()
    # Where to post text deltas while generating (the API process holding the client's stream).
    stream_to: str | None = None
    owner: int | None = None  # the job's user, named in the security event of a blocked answer


class StreamBatch(BaseModel):
    """Text deltas posted by a streaming activity to the API that holds the client's stream."""

    attempt: str  # activity id and attempt: a new value means a retry or fallback started over
    provider: str
    deltas: list[str] = []


class GenerateResult(BaseModel):
    provider: str
    model: str
    text: str
    usage: Usage
    finish_reason: str | None = None
    latency_ms: float


# --- workflows --------------------------------------------------------------------------------


class Target(BaseModel):
    """One provider to ask, with its model (None: the provider's default)."""

    provider: ProviderName
    model: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Target:
        """ "openai" or "openai/gpt-4o-mini"; a model name may itself contain slashes."""
        provider, _, model = spec.partition("/")
        return cls(provider=provider, model=model or None)  # type: ignore[arg-type]

    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.model else self.provider


class ChatInput(BaseModel):
    prompt: str = ""
    system: str | None = None
    provider: ProviderName = "local"
    model: str | None = None
    params: GenerationParams = GenerationParams()
    # Multi-turn conversation in OpenAI's shape; when given, it is used instead of prompt.
    messages: list[Message] = []
    # Tried in order, each with its retries, when the provider before it failed for good.
    fallback: list[Target] = []
    # Asked in parallel instead of provider and fallback; every answer is returned side by side.
    compare: list[Target] = []
    stream_to: str | None = None
    # Provider calls as local activities, inside the workflow task: no round trip through the server
    # per call. Sync requests use it for latency; a cancel then waits for the next workflow task
    # heartbeat (seconds) instead of the activity's next heartbeat.
    local_calls: bool = False
    # The conversation was already checked by the workflow that built it (RAG checks the question and
    # screens its sources): this job does not check its messages again as prompts.
    input_screened: bool = False


class Attempt(BaseModel):
    provider: str
    model: str | None = None
    error: str | None = None  # None: this one answered


class ChatAnswer(BaseModel):
    provider: str
    model: str | None = None
    text: str = ""
    usage: Usage = Usage()
    latency_ms: float = 0.0
    error: str | None = None


class ChatResult(BaseModel):
    job_id: str
    provider: str
    model: str
    text: str
    usage: Usage
    latency_ms: float
    finish_reason: str | None = None
    attempts: list[Attempt] = []
    answers: list[ChatAnswer] = []  # with compare: one per target, in the order asked


class SaveCompletionInput(BaseModel):
    owner: int
    request: ChatInput
    result: ChatResult


# --- API --------------------------------------------------------------------------------------


Specs = TypeVar("Specs", str, list[str])


def known_providers(value: Specs) -> Specs:
    """A "provider" or "provider/model" spec (or a list of them) naming known providers only."""
    for spec in [value] if isinstance(value, str) else value:
        provider = spec.partition("/")[0]
        if provider not in get_args(ProviderName):
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(get_args(ProviderName))}")
    return value


class AnswerRequest(BaseModel):
    """What every request that asks a provider for an answer takes: who answers, how, and how long the
    job may run and the caller waits."""

    provider: str = Field("local", description='A provider name, or "provider/model".')
    model: str | None = Field(None, min_length=1, max_length=200)
    fallback: list[str] = Field(
        [], max_length=4, description="Providers tried in order if one fails for good."
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=8192)
    stop: list[str] | None = Field(None, max_length=4)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    timeout_s: float = Field(300.0, gt=0, le=24 * 3600, description="Bounds the whole job.")
    wait_s: float = Field(
        60.0, ge=0, le=600, description="How long a sync call waits before answering 202 with the job id."
    )

    @field_validator("provider", "fallback")
    @classmethod
    def _known_providers(cls, value: str | list[str]) -> str | list[str]:
        return known_providers(value)

    def answering(self) -> ChatInput:
        """Who answers and how: the provider (a request's model wins over one in "provider/model"),
        the fallback order and the generation parameters."""
        primary = Target.parse(self.provider)
        if self.model is not None:
            primary = Target(provider=primary.provider, model=self.model)
        return ChatInput(
            provider=primary.provider,
            model=primary.model,
            fallback=[Target.parse(spec) for spec in self.fallback],
            params=GenerationParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_tokens,
                stop=self.stop,
                seed=self.seed,
                presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty,
            ),
        )


class ChatRequest(AnswerRequest):
    prompt: str | None = Field(None, min_length=1, max_length=100_000)
    messages: list[Message] | None = Field(None, min_length=1, max_length=1000)
    system: str | None = Field(None, max_length=100_000)
    compare: list[str] = Field(
        [], max_length=4, description="Providers asked in parallel, answers side by side."
    )
    response_format: Literal["text", "json_object"] | None = None

    @model_validator(mode="after")
    def _one_conversation(self) -> ChatRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        if self.messages is not None and self.system is not None:
            raise ValueError("with messages, put the system message into messages")
        return self

    @field_validator("compare")
    @classmethod
    def _known_compared(cls, value: list[str]) -> list[str]:
        return known_providers(value)

    def to_workflow_input(self) -> ChatInput:
        request = self.answering()
        request.prompt = self.prompt or ""
        request.system = self.system
        request.messages = self.messages or []
        request.compare = [Target.parse(spec) for spec in self.compare]
        request.params.response_format = self.response_format
        return request


class JobAccepted(BaseModel):
    job_id: str
    status_url: str


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class JobError(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None  # e.g. the guard's reasons of guard_refused, output_blocked


class Job(BaseModel):
    job_id: str
    kind: str
    status: JobStatus
    created_at: datetime | None = None
    closed_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserCreate(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["user", "admin"] = "user"


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    is_active: bool
    created_at: datetime


# Vectors


class ChunkPoint(BaseModel):
    """One chunk of a document, with its dense embedding, as the vector store keeps it."""

    document_id: str = Field(min_length=1)
    chunk_index: int = Field(ge=0)
    owner: str
    filename: str
    title: str | None = None
    page: int | None = None  # 1-based page the chunk starts on; None for sources without pages
    text: str
    language: str | None = None  # ISO 639-1; None: detected from the text
    vector: list[float]


class SearchHit(BaseModel):
    document_id: str
    filename: str
    title: str | None = None
    page: int | None = None
    chunk_index: int
    text: str
    language: str | None = None
    score: float  # fused rank score: only the order it gives means something
    dense_score: float | None = None  # cosine similarity, when the dense search found this chunk
    sparse_score: float | None = None  # BM25 score, when the keyword search found this chunk


# Documents: parsing and chunking
#
# A long document's text does not fit in a Temporal payload (about 2 MB), so the parser writes it next to
# the upload and the activities pass paths and counts: `ParsedDocument` and the chunks live on disk only.

DocumentMediaType = Literal["application/pdf", "text/plain", "text/markdown"]


class ParseRequest(BaseModel):
    path: str  # the stored upload, on storage every worker that parses and chunks can read
    media_type: DocumentMediaType
    # Part of the job's history like every input: fine for a document's own password, not for a secret.
    password: str | None = None


class PageText(BaseModel):
    page: int = Field(ge=1)
    text: str = ""
    error: str | None = None  # why the page has no text: scanned, blank, unreadable


class ParsedDocument(BaseModel):
    """What the parser read, stored as JSON at ParseResult.pages_path."""

    page_count: int
    pages: list[PageText]
    warnings: list[str] = []


class PageError(BaseModel):
    page: int
    error: str


class ParseResult(BaseModel):
    pages_path: str  # a ParsedDocument as JSON, next to the upload
    page_count: int
    text_pages: int  # pages with text
    char_count: int
    page_errors: list[PageError] = []
    warnings: list[str] = []


class ChunkRequest(BaseModel):
    pages_path: str
    # The embedder's tokenizer.json (or its model directory, or "tiktoken:<encoding>"); None: the
    # tokenizer of `embedder` (core.chunking.tokenizer_for_embedder).
    tokenizer_path: str | None = None
    embedder: str | None = None  # the chunks' embedder, "provider/model"; None: the default embedder
    # None: the worker's settings (max_chunk_tokens, chunk_overlap_tokens, max_embed_tokens and
    # max_embed_chunks).
    max_chunk_tokens: int | None = Field(None, ge=8)
    chunk_overlap_tokens: int | None = Field(None, ge=0)
    max_embed_tokens: int | None = Field(None, ge=8)
    max_chunks: int | None = Field(None, ge=1)


class DocumentChunk(BaseModel):
    chunk_index: int  # dense 0..n-1 in document order
    page: int  # the page the chunk starts on (chunks do not span pages)
    text: str
    token_count: int  # in the embedder's own tokens, without its special tokens
    char_start: int = 0  # text == page text[char_start:char_end]
    char_end: int = 0


class ChunkResult(BaseModel):
    chunks_path: str  # JSON lines, one DocumentChunk each, in chunk_index order
    chunk_count: int
    token_count: int
    truncated: bool = False  # the chunk limit stopped chunking before the end of the document
    warnings: list[str] = []


# Retrieval: embedding batches, vector writes and searches
#
# Vectors, like chunk texts, travel on disk: a batch's vectors are written next to the chunks by the
# worker that embedded them and read by the process that holds the vector store.


class EmbedBatch(BaseModel):
    chunks_path: str
    start: int = Field(ge=0)  # chunk_index range [start, end)
    end: int = Field(ge=1)
    embedder: str  # "provider/model"


class EmbeddedBatch(BaseModel):
    vectors_path: str  # float32 .npy, one row per chunk of the batch
    count: int
    collection: str  # named after the embedder and its dimension


class DocumentRef(BaseModel):
    """What every chunk of a document carries into the store."""

    document_id: str
    owner: str
    filename: str
    title: str | None = None


class UpsertBatch(BaseModel):
    chunks_path: str
    vectors_path: str
    start: int = Field(ge=0)
    end: int = Field(ge=1)
    embedder: str
    document: DocumentRef


class DeleteVectors(BaseModel):
    collection: str
    document_id: str


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=100)
    owner: str | None = None  # None: every owner's documents (admins)
    document_ids: list[str] | None = None
    filters: dict[str, str | int | list[str] | list[int]] | None = None
    embedder: str


class SearchResult(BaseModel):
    hits: list[SearchHit]


# Ingestion: an uploaded document through parse -> chunk -> embed -> upsert


class IngestInput(BaseModel):
    document_id: str
    owner: int
    sha256: str
    filename: str
    title: str | None = None
    metadata: dict[str, Any] = {}
    media_type: DocumentMediaType
    size_bytes: int
    upload_path: str  # on storage every worker can read
    password: str | None = None
    embedder: str
    vector_task_queue: str  # workflows cannot read settings: the queue of the store's process
    batch_size: int = Field(64, ge=1)  # chunks per embed activity
    # Re-indexing a stored document with another embedder: the job takes the document over, and once
    # its new vectors are written, removes those of the collection it replaces.
    reindex: bool = False
    replaces_collection: str | None = None


class DocumentOutcome(BaseModel):
    """What the ingestion job writes on the document at its end."""

    document_id: str
    status: Literal["completed", "failed"]
    error: str | None = None
    page_count: int | None = None
    chunk_count: int | None = None
    collection: str | None = None
    page_errors: list[PageError] = []
    warnings: list[str] = []


class IngestProgress(BaseModel):
    stage: Literal["registering", "parsing", "chunking", "embedding", "done", "failed"] = "registering"
    pages: int | None = None
    pages_with_text: int | None = None
    chunks: int | None = None
    chunks_embedded: int = 0


class DeleteDocumentInput(BaseModel):
    document_id: str
    collection: str | None  # None: the job ended before any chunk was written
    vector_task_queue: str


class IngestResult(BaseModel):
    document_id: str
    page_count: int
    chunk_count: int
    collection: str | None = None
    page_errors: list[PageError] = []
    warnings: list[str] = []


# RAG chat: a question answered from the caller's documents, citing them


class RagRequest(AnswerRequest):
    """POST /chat/rag and /chat/rag/async."""

    question: str = Field(
        min_length=1,
        max_length=4000,
        validation_alias=AliasChoices("question", "prompt"),
        description='The question; "prompt" is accepted as another name for it.',
    )
    k: int = Field(5, ge=1, le=20, description="At most this many chunks are given to the model as sources.")
    document_ids: list[str] | None = Field(
        None, min_length=1, max_length=1000, description="Only these documents; omitted: all of the caller's."
    )
    all: bool = Field(False, description="Admins: search everyone's documents.")
    # Low by default: the answer should say what the sources say, not invent around them.
    temperature: float = Field(0.2, ge=0.0, le=2.0)

    def chat_input(self) -> ChatInput:
        """Who answers and how; RagChatWorkflow fills in the conversation."""
        return self.answering()


class RagInput(BaseModel):
    question: str
    k: int = Field(5, ge=1, le=20)
    owner: str | None  # whose documents; None: everyone's (admins)
    document_ids: list[str] | None = None
    embedder: str  # the collection's embedder, "provider/model"
    vector_task_queue: str  # workflows cannot read settings: the queue of the store's process
    # Chunks less similar than this to the question (cosine of the embedder's vectors) are never shown
    # to the model; with none left, the answer says the documents hold nothing relevant.
    min_relevance: float = 0.0
    # Provider, fallback, generation params and local_calls of the answer; its messages are built from
    # the sources.
    chat: ChatInput = ChatInput()


class Citation(BaseModel):
    n: int  # the source's number, as the answer writes it: [n]
    document_id: str
    filename: str
    page: int | None = None
    excerpt: str  # a short passage of the source, where it bears most on the question


class RagSource(BaseModel):
    """A chunk given to the model as source [n]."""

    n: int
    document_id: str
    filename: str
    title: str | None = None
    page: int | None = None
    chunk_index: int
    relevance: float  # cosine similarity to the question
    text: str


class FlaggedSource(BaseModel):
    """A retrieved chunk the guard refused as a source (kind document)."""

    document_id: str
    filename: str
    page: int | None = None
    chunk_index: int
    score: float
    reasons: list[str]


class RagResult(BaseModel):
    job_id: str
    text: str
    citations: list[Citation] = []
    # True when the answer cited no source by number and every source given is cited instead.
    citations_inferred: bool = False
    sources: list[RagSource] = []
    # The answer's chat job; None when no model was asked (nothing relevant was found).
    answer_job_id: str | None = None
    provider: str | None = None
    model: str | None = None
    usage: Usage = Usage()
    latency_ms: float = 0.0
    finish_reason: str | None = None
    attempts: list[Attempt] = []
    # Retrieved chunks the guard flagged as instructions to the model: never shown to it.
    flagged_sources: list[FlaggedSource] = []


# Guard: a text checked for prompt injection before it reaches a model (core/guard.py)

GuardKind = Literal["prompt", "document", "output"]


class GuardCheck(BaseModel):
    text: str
    # prompt: a user's message; document: retrieved or uploaded content a model will read;
    # output: a model's answer before it is returned.
    kind: GuardKind = "prompt"


class GuardVerdict(BaseModel):
    allowed: bool
    # 0..1: the strongest evidence found; refused when it reaches the threshold of the kind.
    score: float
    # Stable codes of every signal found (core/guard.py REASONS), also when the text is allowed.
    reasons: list[str] = []


# Guard steps of workflows (activities/guard.py)


class PromptCheck(BaseModel):
    texts: list[str]  # a user's texts: the prompt, the system message, each non-assistant message
    owner: int | None = None


class SourcesCheck(BaseModel):
    hits: list[SearchHit]
    owner: int | None = None


class SourcesVerdict(BaseModel):
    flagged: list[FlaggedSource] = []
