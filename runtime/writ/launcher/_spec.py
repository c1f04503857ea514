"""LaunchSpec: every check and every hardening choice, decided before any side effect."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .._proto import capabilities_pb2 as caps
from ..errors import InvalidArgument

# Broker defaults, used where neither manifest nor grant sets a limit.
DEFAULT_LIMITS = caps.Limits(memory_mb=256, cpus=1.0, pids=64, timeout_s=60, tmp_mb=32)
# Ceilings no manifest may exceed.
MAX_LIMITS = caps.Limits(memory_mb=4096, cpus=2.0, pids=1024, timeout_s=3600, tmp_mb=1024)
TOOL_USER = "10001:10001"
SOCKET_MOUNT = "/run/writ"          # where the invocation's socket dir appears inside
SOCKET_NAME = "broker.sock"
LABEL_MANAGED = "writ.managed"
LABEL_BROKER = "writ.broker"
LABEL_INVOCATION = "writ.invocation"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def effective_limits(manifest: caps.Limits, grant: caps.Limits) -> caps.Limits:
    """Per field: the manifest's value (the broker default where it sets none) is the
    ceiling; a grant's value lowers it, never raises it; nothing exceeds MAX_LIMITS."""
    out = caps.Limits()
    for name in ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb"):
        ceiling = getattr(manifest, name) or getattr(DEFAULT_LIMITS, name)
        wanted = getattr(grant, name)
        value = min(ceiling, wanted) if wanted > 0 else ceiling
        setattr(out, name, min(value, getattr(MAX_LIMITS, name)))
    return out


@dataclass(frozen=True)
class LaunchSpec:
    """Everything the launcher will ask Docker for. Built by ``create``, which validates;
    the launcher applies it without further decisions."""

    image: str
    image_id: str
    invocation_id: str
    broker_id: str
    socket_dir: Path
    limits: caps.Limits
    seccomp_json: str
    env: dict[str, str] = field(default_factory=dict)
    extra_labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, *, image: str, image_id: str, invocation_id: str, broker_id: str,
               socket_dir: Path, limits: caps.Limits, seccomp_json: str,
               env: dict[str, str], extra_labels: dict[str, str] | None = None) -> LaunchSpec:
        """Validate inputs; no side effects.

        Raises:
            InvalidArgument: a relative socket dir, an env name that is not a plain
                identifier, limits out of range, an empty seccomp profile.
        """
        if not socket_dir.is_absolute():
            raise InvalidArgument(f"socket dir {socket_dir} must be absolute")
        for name in env:
            if not _ENV_NAME.match(name):
                raise InvalidArgument(f"environment name {name!r} is not allowed")
        if not seccomp_json.strip().startswith("{"):
            raise InvalidArgument("seccomp profile must be JSON text")
        for name in ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb"):
            if not 0 < getattr(limits, name) <= getattr(MAX_LIMITS, name):
                raise InvalidArgument(f"limit {name}={getattr(limits, name)} out of range")
        return cls(image, image_id, invocation_id, broker_id, socket_dir, limits, seccomp_json,
                   dict(env), dict(extra_labels or {}))

    @property
    def memory_bytes(self) -> int:
        return int(self.limits.memory_mb) * 1024 * 1024

    @property
    def nano_cpus(self) -> int:
        return int(self.limits.cpus * 1e9)

    @property
    def tmpfs(self) -> dict[str, str]:
        # noexec: /tmp holds data, not programs; the size cap bounds the tool's disk use.
        return {"/tmp": f"rw,noexec,nosuid,nodev,size={self.limits.tmp_mb}m,mode=1777"}

    @property
    def security_opt(self) -> list[str]:
        return ["no-new-privileges", f"seccomp={self.seccomp_json}"]

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_MANAGED: "true", LABEL_BROKER: self.broker_id,
                LABEL_INVOCATION: self.invocation_id, **self.extra_labels}
