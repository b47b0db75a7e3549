"""Inputs and outputs of the API, the workflows and the activities.

Workflow and activity payloads are pydantic models carried by Temporal's pydantic data converter.
Fields are only ever added with defaults, so histories of running workflows stay readable.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

ProviderName = Literal["local"]


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerationParams(BaseModel):
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=8192)


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


class GenerateResult(BaseModel):
    provider: str
    model: str
    text: str
    usage: Usage
    finish_reason: str | None = None
    latency_ms: float


# --- workflows --------------------------------------------------------------------------------


class ChatInput(BaseModel):
    prompt: str
    system: str | None = None
    provider: ProviderName = "local"
    model: str | None = None
    params: GenerationParams = GenerationParams()


class ChatResult(BaseModel):
    job_id: str
    provider: str
    model: str
    text: str
    usage: Usage
    latency_ms: float


# --- API --------------------------------------------------------------------------------------


class ChatRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=100_000)
    system: str | None = Field(None, max_length=100_000)
    provider: ProviderName = "local"
    model: str | None = Field(None, min_length=1, max_length=200)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=8192)
    timeout_s: float = Field(300.0, gt=0, le=24 * 3600, description="Bounds the whole job.")
    wait_s: float = Field(
        60.0, ge=0, le=600, description="How long POST /chat/ waits before answering 202 with the job id."
    )

    def to_workflow_input(self) -> ChatInput:
        return ChatInput(
            prompt=self.prompt,
            system=self.system,
            provider=self.provider,
            model=self.model,
            params=GenerationParams(
                temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens
            ),
        )


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
