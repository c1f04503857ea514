"""Named retry policies. Retry only where repeating is harmless (reads and idempotent
removals against dockerd); never around payments or anything that acts twice."""

from __future__ import annotations

import requests
from docker.errors import APIError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential


def _dockerd_transient(exc: BaseException) -> bool:
    if isinstance(exc, APIError):
        return bool(exc.is_server_error())
    return isinstance(exc, requests.exceptions.ConnectionError)


# Connection errors and 5xx from dockerd: 4 tries within about a second.
DOCKERD_TRANSIENT = retry(
    retry=retry_if_exception(_dockerd_transient),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.05, max=0.5),
    reraise=True,
)
