"""Every operation of the OpenAPI schema, fed generated input by schemathesis, answers without a server
error: bad input is a 4xx with a message, never a 500.

The stack is its own: generations are capped at a few tokens (MAX_TOKENS_CAP) so that hundreds of
generated chat requests finish within CI's time, a cap the session stack's long-answer tests cannot have.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.openapi import from_url

from tests.conftest import ADMIN_PASSWORD, RunningStack, stack_env, start_stack

# Enough to reach each operation's validation branches; each one more costs about two seconds (~40
# operations, two roles).
EXAMPLES_PER_OPERATION = 20


# A provider that refuses or fails a request is a bad gateway (502) and a step that runs out of time a
# gateway timeout (504), with the provider's own words: the API's documented answers, not its faults.
GATEWAY_ERRORS = {502: "provider_error", 504: "step_timeout"}
CHECKS = [not_a_server_error, response_schema_conformance]


def is_gateway_error(response: requests.Response) -> bool:
    if response.status_code not in GATEWAY_ERRORS:
        return False
    try:
        return response.json()["error"]["code"] == GATEWAY_ERRORS[response.status_code]
    except (ValueError, KeyError, TypeError):
        return False


def _bearer(client: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = client.post("/auth/login", data={"username": username, "password": password})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    var_dir = tmp_path_factory.mktemp("fuzz-var")
    running = start_stack(var_dir, stack_env(var_dir, MAX_TOKENS_CAP="8"))
    yield running
    running.stack.stop()


@pytest.fixture(scope="module")
def bearers(fuzz_stack: RunningStack) -> dict[str, dict[str, str]]:
    """Auth headers of an admin and of an ordinary user."""
    with httpx.Client(base_url=fuzz_stack.api_url, timeout=30) as client:
        admin = _bearer(client, "admin", ADMIN_PASSWORD)
        created = client.post(
            "/auth/register",
            json={"username": "fuzzer", "password": "fuzzer-password", "role": "user"},
            headers=admin,
        )
        created.raise_for_status()
        return {"admin": admin, "user": _bearer(client, "fuzzer", "fuzzer-password")}


# An admin reaches branches a user is refused at (everyone's jobs and documents, registering users).
@pytest.fixture(scope="module", params=["user", "admin"])
def api_schema(
    request: pytest.FixtureRequest, fuzz_stack: RunningStack, bearers: dict[str, dict[str, str]]
) -> schemathesis.BaseSchema:
    """The served schema, called with the role's token."""
    schema = from_url(f"{fuzz_stack.api_url}/openapi.json")
    schema.config.update(base_url=fuzz_stack.api_url, headers=bearers[request.param], request_timeout=60)
    # Examples and random fuzzing, bounded by max_examples; the coverage phase is not (hundreds per route).
    schema.config.phases.update(phases=["examples", "fuzzing"])
    # Workers deliver stream events there, signed with a key the caller has not: not part of the API.
    return schema.exclude(path_regex="^/internal/")


def test_no_operation_answers_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    # Each operation on its own, so one failing operation does not hide the others'. (Schemathesis's own
    # pytest integration does not run under this pytest version.)
    failures = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failing input is enough
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            if is_gateway_error(response):
                return
            case.validate_response(response, checks=CHECKS)

        try:
            call()
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis reports failures as a group
            failures.append(f"{operation.label}: {exc}")
    assert operations > 20
    assert not failures, "\n\n".join(failures)


def test_max_tokens_cap_bounds_every_generation(
    fuzz_stack: RunningStack, bearers: dict[str, dict[str, str]]
) -> None:
    essay = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 200, "temperature": 0}
    with httpx.Client(base_url=fuzz_stack.api_url, timeout=120, headers=bearers["user"]) as client:
        chat = client.post("/chat/", json=essay)
        assert chat.status_code == 200, chat.text
        assert 0 < chat.json()["usage"]["completion_tokens"] <= 8
        assert chat.json()["finish_reason"] == "length"
        messages = [{"role": "user", "content": essay["prompt"]}]
        openai = client.post(
            "/v1/chat/completions", json={"model": "local", "messages": messages, "max_tokens": 200}
        )
        assert openai.status_code == 200, openai.text
        assert 0 < openai.json()["usage"]["completion_tokens"] <= 8
