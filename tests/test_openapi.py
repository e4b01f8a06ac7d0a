"""The OpenAPI document at /api/openapi.json: valid, complete, and true to the live API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import redis.asyncio as aioredis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskrunner.api import kingtask
from taskrunner.api.app import build_app
from taskrunner.runner import Runner
from tests.support.http import base_url, http
from tests.support.runners import RunnerHarness, wait_state
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

TOKEN = "openapi-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25
# Generated ids may name a job created earlier in the run; never let a wait block for long.
FIXED_QUERY = {"waitJob": {"timeout": 0.2}}


async def fetch_document(runners: RunnerHarness, **settings: Any) -> tuple[Runner, dict[str, Any]]:
    runner = await runners.start(**settings)
    status, document = await http(runner, "GET", "/api/openapi.json", headers=AUTH)
    assert status == 200 and isinstance(document, dict)
    return runner, document


async def test_document_is_valid_openapi(runners: RunnerHarness) -> None:
    _, document = await fetch_document(runners)
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["security"] == [{"bearerAuth": []}]


async def test_document_describes_exactly_the_registered_routes(runners: RunnerHarness) -> None:
    runner, document = await fetch_document(runners)
    # the same route table the runner serves
    app = build_app(runner.service, runner.health, runner.metrics_text, runner.settings)
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api")
        and not any(route.resource.canonical.startswith(p) for p in kingtask.PREFIXES)
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert ("/api/jobs/{id}/wait", "get") in registered
    assert registered == documented


async def test_a_retried_push_answers_a_documented_status(runners: RunnerHarness) -> None:
    # schemathesis found it: a push whose id exists already answers 200, undocumented then.
    runner, document = await fetch_document(runners)
    answers = [
        (await http(runner, "POST", "/api/jobs", json={"task": "true", "id": "twice"}))[0]
        for _ in range(2)
    ]
    assert answers == [201, 200]
    assert {"201", "200"} <= set(document["paths"]["/api/jobs"]["post"]["responses"])


async def test_every_documented_error_status_uses_the_error_schema(
    runners: RunnerHarness,
) -> None:
    _, document = await fetch_document(runners)
    responses = document["components"]["responses"]
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert {"401", "503"} <= set(op["responses"]), (method, path)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    name = response["$ref"].rsplit("/", 1)[-1]
                    schema = responses[name]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.slow
async def test_live_api_conforms_to_the_document(
    runners: RunnerHarness, mode: GenerationMode
) -> None:
    # task_mode=False: generated jobs are accepted and routed, but no generated command runs.
    runner, document = await fetch_document(runners, task_mode=False, auth_token=TOKEN)
    failures = await asyncio.to_thread(exercise, load(document, runner), mode, {})
    assert not failures, "\n\n".join(failures)


@pytest.mark.timeout(180)
@pytest.mark.slow
async def test_live_api_conforms_on_existing_resources(
    runners: RunnerHarness, redis: aioredis.Redis
) -> None:
    """Operations on a path id get ids that exist: a live job, a dead job, dead letters and
    channels, so their 200 answers are checked too, not only their 404s."""
    worker = await runners.start()  # runs the one job that must fail, then stops
    await worker.service.submit({"task": "false", "retries": 1, "id": "seed-dead"}, source="t")
    await wait_state(worker.store, "seed-dead", "dead")
    await runners.stop(worker)
    runner, document = await fetch_document(runners, task_mode=False, auth_token=TOKEN)
    service = runner.service
    await service.submit({"task": "true", "id": "seed-live"}, source="t")
    for name in ("seeded", "seeded-empty"):
        await service.create_channel(service.new_channel(name, {}))
    await redis.lpush("task:prepare:queue", b"not json 1", b"not json 2")

    async def both_dead_lettered() -> bool:
        return await runner.store.dead_letter_count() == 2

    await wait_until(both_dead_lettered, message="both messages to be dead-lettered")
    letters = [entry["id"] for entry in await runner.store.dead_letters()]
    path_parameters = {
        "getJob": {"id": "seed-dead"},
        "waitJob": {"id": "seed-dead"},
        "cancelJob": {"id": "seed-live"},
        "getChannel": {"name": "seeded"},
        "updateChannel": {"name": "seeded"},
        "pauseChannel": {"name": "seeded"},
        "resumeChannel": {"name": "seeded"},
        "deleteChannel": {"name": "seeded-empty"},
        "retryDeadJob": {"id": "seed-dead"},
        "dropDeadJob": {"id": "seed-dead"},
        "retryDeadLetter": {"id": letters[0]},
        "dropDeadLetter": {"id": letters[1]},
    }
    schema = load(document, runner)
    failures = await asyncio.to_thread(exercise, schema, GenerationMode.POSITIVE, path_parameters)
    assert not failures, "\n\n".join(failures)


def load(document: dict[str, Any], runner: Runner) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=base_url(runner))
    return schema


def exercise(
    schema: Any, mode: GenerationMode, path_parameters: dict[str, dict[str, str]]
) -> list[str]:
    """Generated requests for every operation, or with `path_parameters` only for the
    operations it names (blocking: runs in a thread beside the runner's event loop)."""
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in schema.raw_schema["paths"].values())
    with requests.Session() as session:
        for operation in operations:
            op_id = operation.definition.raw["operationId"]
            if path_parameters and op_id not in path_parameters:
                continue
            strategy = operation.as_strategy(
                generation_mode=mode,
                query=FIXED_QUERY.get(op_id),
                path_parameters=path_parameters.get(op_id),
            )
            try:
                run_examples(strategy, lambda case: check_case(case, session))
            except (Exception, FailureGroup) as exc:  # one report per operation, then the next
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


def check_case(case: Case, session: requests.Session) -> None:
    case.call_and_validate(session=session, headers=AUTH, checks=CHECKS)


def run_examples(strategy: Any, test: Callable[[Case], None]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=strategy)
    def run(case: Case) -> None:
        test(case)

    run()
