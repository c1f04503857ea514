"""Shared fixtures. Integration tests need a Docker engine: on a laptop without one they
skip with one message; under CI=true a missing engine fails the run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# Every container a test run creates carries this label; the session reaps by it.
TEST_RUN_ID = uuid.uuid4().hex[:12]
TEST_LABEL = "writ.test-run"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _engine_missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and no Docker engine answers: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine answers ({reason}); run `make docker` to install and "
                "start one")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        _engine_missing(str(exc))
    yield client
    for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={TEST_RUN_ID}"}):
        try:
            c.remove(force=True)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone, or removal already in progress
                raise


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    """writ-base:latest and the example tool images, built if missing (cached after)."""
    from writ import images

    images.build_all(docker_client, say=lambda _msg: None)
    return images.BASE_IMAGE
