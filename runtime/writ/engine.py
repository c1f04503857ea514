"""Make sure a Docker engine answers: install Debian's docker.io and start dockerd if not.

Used by `make docker`, `make demo`, `make test` and CI. Prints progress for people.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DOCKERD_LOG = Path("/var/log/writ-dockerd.log")
APT_PACKAGES = ["docker.io", "debootstrap"]


def _say(msg: str) -> None:
    print(f"[engine] {msg}", file=sys.stderr, flush=True)


def answers(timeout: float = 5.0) -> bool:
    try:
        import docker

        docker.from_env(timeout=timeout).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"installing {packages} needs root (apt-get); run as root or "
                         "install them yourself")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _say("apt-get update")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    _say(f"apt-get install {' '.join(packages)}")
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                   check=True, env=env)


def ensure(wait_s: float = 60.0) -> None:
    """Return once dockerd answers; install and start it when needed."""
    missing = [p for p, binary in (("docker.io", "dockerd"), ("debootstrap", "debootstrap"))
               if shutil.which(binary) is None]
    if missing:
        _apt_install(missing)
    if answers():
        _say("Docker engine answers")
        return
    _say(f"starting dockerd (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as log:
        # A new session: dockerd outlives this process, like a service would.
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if answers(timeout=2):
            _say("Docker engine answers")
            return
        time.sleep(0.5)
    tail = DOCKERD_LOG.read_text(errors="replace")[-2000:] if DOCKERD_LOG.exists() else ""
    raise SystemExit(f"dockerd did not answer within {wait_s:.0f}s; last log lines:\n{tail}")


if __name__ == "__main__":
    ensure()
