"""No secret value reaches a log stream, however it gets into a record."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.logging import MASK, configure_logging
from core.settings import Settings

JWT = "jwt-secret-3f9a7c"
ADMIN = "admin-password-81d2"
MODEL_KEY = "model-key-5e6b0a"
DB_PASSWORD = "db-pass-77c1"
SECRETS = (JWT, ADMIN, MODEL_KEY, DB_PASSWORD)

log = logging.getLogger("tests.core.logging")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    # configure_logging replaces the root handlers and changes a few named loggers; put them back.
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    named = {
        name: (list(logger.handlers), logger.level, logger.propagate)
        for name in ("httpx", "httpx2", "httpcore", "uvicorn", "uvicorn.error", "uvicorn.access")
        for logger in [logging.getLogger(name)]
    }
    yield
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, level, propagate) in named.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def settings(clean_env: Path) -> Settings:
    return Settings(
        jwt_secret=JWT,
        admin_password=ADMIN,
        model_server_api_key=MODEL_KEY,
        database_url=f"postgresql+asyncpg://app:{DB_PASSWORD}@db.internal:5432/assistant",
    )


@pytest.fixture
def stream(settings: Settings, restore_logging: None) -> io.StringIO:
    stream = io.StringIO()
    configure_logging("INFO", settings.all_secret_values(), stream=stream)
    return stream


def assert_masked(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output
    assert MASK in output


def test_a_logged_settings_object_shows_no_secret(settings: Settings, stream: io.StringIO) -> None:
    log.info("settings: %s", settings)
    log.info("settings: %r", settings)

    output = stream.getvalue()
    assert "settings: " in output and "api_port=8000" in output
    assert_masked(output)


def test_a_secret_inside_the_message_is_masked(stream: io.StringIO) -> None:
    log.warning(f"login with {ADMIN} failed; token {JWT}")

    output = stream.getvalue()
    assert f"login with {MASK} failed; token {MASK}" in output
    assert_masked(output)


def test_secrets_in_percent_arguments_are_masked(stream: io.StringIO) -> None:
    log.info("calling the model server with key=%s", MODEL_KEY)
    log.info("connecting to %(url)s", {"url": f"postgresql://app:{DB_PASSWORD}@db.internal/assistant"})

    output = stream.getvalue()
    assert f"key={MASK}" in output
    assert f"postgresql://app:{MASK}@db.internal/assistant" in output
    assert_masked(output)


def test_an_exception_text_with_a_secret_is_masked(stream: io.StringIO) -> None:
    try:
        raise ValueError(f"bad signature for secret {JWT}")
    except ValueError:
        log.exception("token check failed")

    output = stream.getvalue()
    assert "token check failed" in output and "Traceback" in output
    assert f"ValueError: bad signature for secret {MASK}" in output
    assert_masked(output)


def test_arguments_that_do_not_fit_the_message_are_masked_not_raised(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    log.info("two values %s %s expected", ADMIN)

    output = stream.getvalue() + capsys.readouterr().err
    assert "two values" in output
    assert_masked(output)


def test_normal_text_is_left_alone(clean_env: Path, restore_logging: None) -> None:
    # The default model-server key "local" is public; masking it would garble ordinary words.
    settings = Settings(jwt_secret=JWT)
    stream = io.StringIO()
    configure_logging("INFO", settings.all_secret_values(), stream=stream)
    line = "the local provider on localhost:8100 answered 100% of 12 requests (admin, user)"

    log.info(line)
    log.info("%s answered in %.1f s", "local", 0.25)

    assert f"{line}\n" in stream.getvalue()
    assert "local answered in 0.2 s" in stream.getvalue()
    assert MASK not in stream.getvalue()


def test_a_secret_generated_after_logging_is_configured_is_masked(
    clean_env: Path, restore_logging: None
) -> None:
    # The API configures logging at start and generates its JWT secret later, in its lifespan.
    settings = Settings()
    stream = io.StringIO()
    configure_logging("INFO", settings.all_secret_values(), stream=stream)

    generated = settings.secret_value("jwt_secret")
    log.info("signing with %s", generated)

    assert generated not in stream.getvalue()
    assert f"signing with {MASK}" in stream.getvalue()


def test_records_below_the_level_are_dropped_and_others_are_formatted(stream: io.StringIO) -> None:
    log.debug("not shown")
    logging.getLogger("uvicorn.error").info("uvicorn line %s", JWT)

    output = stream.getvalue()
    assert "not shown" not in output
    assert f"INFO uvicorn.error: uvicorn line {MASK}" in output
