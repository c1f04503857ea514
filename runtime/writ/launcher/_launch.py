"""Launch: a straight line of named steps whose order is the security argument.

    _create          ask Docker for exactly the spec's hardening
    _verify_config   re-inspect: refuse unless Docker recorded what was asked
    _start
    _verify_process  read the running PID 1's /proc status: seccomp on, no new privs,
                     no capabilities, not root

Only after all four does the broker serve the invocation's socket (the tool's first call
blocks until then), so an unverified container never reaches any authority.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.errors import ImageNotFound as DockerImageNotFound
from docker.types import LogConfig, Mount

from ..errors import HardeningMismatch, ImageNotFound, LaunchFailed
from ..retry import DOCKERD_TRANSIENT
from ._spec import LABEL_BROKER, LABEL_MANAGED, SOCKET_MOUNT, TOOL_USER, LaunchSpec

# Filesystems without host data: kernel views and memory-backed mounts.
VIRTUAL_FS = {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}
DOCKER_ETC_FILES = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}


@dataclass(frozen=True)
class Launched:
    container_id: str
    pid: int
    launch_ms: float


class Launcher:
    def __init__(self, client: Any | None = None) -> None:
        self.client = client or docker.from_env(timeout=60)

    # -- the straight line ---------------------------------------------------------------
    def launch(self, spec: LaunchSpec) -> Launched:
        """Create, verify, start and re-verify one container.

        Raises:
            ImageNotFound: the image is gone.
            HardeningMismatch: Docker applied something else; the container is removed.
            LaunchFailed: any other step failed, naming the step.
        """
        t0 = time.perf_counter()
        container = self._create(spec)
        try:
            self._verify_config(container.attrs, spec)
            self._start(container)
            pid = self._verify_process(container)
        except BaseException:
            self.destroy(container.id)
            raise
        return Launched(container.id, pid, (time.perf_counter() - t0) * 1000)

    def _create(self, spec: LaunchSpec) -> Any:
        try:
            return self.client.containers.create(
                # By id, not tag: the image reviewed at registration is the image run.
                spec.image_id,
                user=TOOL_USER,                       # non-root, even if the image says root
                network_mode="none",                  # loopback only; the socket is the way out
                read_only=True,                       # the tool cannot alter its own image
                tmpfs=spec.tmpfs,                     # the only writable place, size-capped
                cap_drop=["ALL"],                     # drop ALL first: images may carry file caps
                security_opt=spec.security_opt,       # no-new-privileges + our seccomp profile
                cgroupns="private",                   # hide the host's cgroup tree
                ipc_mode="private",
                pids_limit=int(spec.limits.pids),     # no fork bombs
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,      # equal to mem: no swap on top
                nano_cpus=spec.nano_cpus,
                # The one mount: this invocation's socket dir, read-only. No other host path.
                mounts=[Mount(SOCKET_MOUNT, str(spec.socket_dir), type="bind", read_only=True)],
                environment=spec.env,
                labels=spec.labels,
                log_config=LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
                detach=True,
            )
        except DockerImageNotFound:
            raise ImageNotFound(spec.image) from None
        except APIError as exc:
            raise LaunchFailed("create", exc.explanation or str(exc)) from None

    def _verify_config(self, attrs: dict[str, Any], spec: LaunchSpec) -> None:
        host = attrs["HostConfig"]
        expect: list[tuple[str, object, object]] = [
            ("HostConfig.NetworkMode", "none", host.get("NetworkMode")),
            ("HostConfig.ReadonlyRootfs", True, host.get("ReadonlyRootfs")),
            ("HostConfig.Privileged", False, host.get("Privileged")),
            ("HostConfig.CapDrop", ["ALL"], host.get("CapDrop")),
            ("HostConfig.CapAdd", None, host.get("CapAdd") or None),
            ("HostConfig.SecurityOpt", spec.security_opt, host.get("SecurityOpt")),
            ("HostConfig.CgroupnsMode", "private", host.get("CgroupnsMode")),
            ("HostConfig.IpcMode", "private", host.get("IpcMode")),
            ("HostConfig.PidMode", "", host.get("PidMode")),
            ("HostConfig.UsernsMode", "", host.get("UsernsMode")),
            ("HostConfig.PidsLimit", int(spec.limits.pids), host.get("PidsLimit")),
            ("HostConfig.Memory", spec.memory_bytes, host.get("Memory")),
            ("HostConfig.MemorySwap", spec.memory_bytes, host.get("MemorySwap")),
            ("HostConfig.NanoCpus", spec.nano_cpus, host.get("NanoCpus")),
            ("HostConfig.Tmpfs", spec.tmpfs, host.get("Tmpfs")),
            ("HostConfig.Binds", None, host.get("Binds") or None),
            ("HostConfig.Devices", None, host.get("Devices") or None),
            ("HostConfig.VolumesFrom", None, host.get("VolumesFrom") or None),
            ("Config.User", TOOL_USER, attrs["Config"].get("User")),
            ("Image", spec.image_id, attrs.get("Image")),
            # Exactly one mount, our socket dir, read-only; an image VOLUME would show here.
            ("Mounts", [(str(spec.socket_dir), SOCKET_MOUNT, False)],
             [(m.get("Source"), m.get("Destination"), m.get("RW")) for m in attrs["Mounts"]]),
        ]
        for name, wanted, got in expect:
            if wanted != got:
                raise HardeningMismatch(name, wanted, got)

    def _start(self, container: Any) -> None:
        try:
            container.start()
        except APIError as exc:
            raise LaunchFailed("start", exc.explanation or str(exc)) from None

    def _verify_process(self, container: Any) -> int:
        container.reload()
        pid = int(container.attrs["State"].get("Pid") or 0)
        if pid <= 0:
            raise LaunchFailed("verify", "container exited before its hardening was verified")
        self.verify_pid(pid, container.id)
        return pid

    def reverify(self, launched: Launched) -> None:
        """Check a container launched earlier (warm pool) again, just before it is given
        authority: still running as the same process, still as hardened. No dockerd call:
        /proc only, well under a millisecond.

        Raises:
            LaunchFailed, HardeningMismatch: the container is gone or changed.
        """
        try:
            with open(f"/proc/{launched.pid}/cgroup") as f:
                cgroups = f.read()
        except OSError:
            raise LaunchFailed("reverify", "the warm container is no longer running") from None
        # The pid could have been reused by another process: its cgroup names the container.
        if launched.container_id not in cgroups:
            raise LaunchFailed("reverify", "the warm container is no longer running")
        self.verify_pid(launched.pid, launched.container_id)

    def verify_pid(self, pid: int, container_id: str) -> None:
        """PID 1 of a container: seccomp on, no new privileges, no capabilities, not root,
        no host mount but the socket dir."""
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":\t", 1) for line in f.read().splitlines()
                              if ":\t" in line)
        except OSError as exc:
            # SECURITY LIMITATION: the check needs the broker in the host PID namespace.
            # Where /proc cannot be read we refuse rather than run unverified.
            raise LaunchFailed("verify", f"cannot read /proc/{pid}/status: {exc}") from None
        want = {"Seccomp": "2", "NoNewPrivs": "1", "CapEff": "0" * 16, "CapPrm": "0" * 16,
                "CapBnd": "0" * 16, "CapAmb": "0" * 16}
        for key, value in want.items():
            if status.get(key, "").strip() != value:
                raise HardeningMismatch(f"/proc/<pid>/status {key}", value, status.get(key))
        uids = status.get("Uid", "").split()
        if not uids or "0" in uids:
            raise HardeningMismatch("/proc/<pid>/status Uid", "non-root", status.get("Uid"))
        self._verify_mounts(pid, container_id)

    @staticmethod
    def _verify_mounts(pid: int, container_id: str) -> None:
        """What the process actually sees: no filesystem from a host device except the
        read-only socket dir and the three per-container files Docker always writes
        (/etc/hosts, /etc/hostname, /etc/resolv.conf, from this container's own dir)."""
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                rows = [line.split() for line in f]
        except OSError as exc:
            raise LaunchFailed("verify", f"cannot read /proc/{pid}/mountinfo: {exc}") from None
        for row in rows:
            root, target, options = row[3], row[4], row[5].split(",")
            fstype = row[row.index("-") + 1]
            if fstype in VIRTUAL_FS or (target == "/" and fstype == "overlay"):
                continue
            if target == SOCKET_MOUNT and "ro" in options:
                continue
            if target in DOCKER_ETC_FILES and f"/containers/{container_id}/" in root:
                continue
            raise HardeningMismatch(f"mount {target}", "no host mount", f"{fstype} {root}")

    # -- life after launch ---------------------------------------------------------------
    def wait(self, container_id: str, timeout: float) -> int:
        """Exit code, or raises requests' ReadTimeout past ``timeout`` seconds."""
        result = self.client.api.wait(container_id, timeout=timeout)
        return int(result.get("StatusCode", -1))

    def logs(self, container_id: str, limit: int = 64 * 1024) -> bytes:
        try:
            data: bytes = self.client.api.logs(container_id, stdout=True, stderr=True)
        except (APIError, NotFound):
            return b""
        return data[-limit:]

    @DOCKERD_TRANSIENT
    def destroy(self, container_id: str) -> None:
        """Kill and remove; idempotent. Force: a PID 1 ignoring SIGTERM must not stall us."""
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    def reap(self, broker_id: str) -> list[str]:
        """Remove containers a previous run of this broker left behind."""
        found = self.client.containers.list(all=True, filters={
            "label": [f"{LABEL_MANAGED}=true", f"{LABEL_BROKER}={broker_id}"]})
        for c in found:
            self.destroy(c.id)
        return [c.id for c in found]

    @DOCKERD_TRANSIENT
    def image_id(self, image: str) -> str:
        """The local image's id (sha256:...).

        Raises:
            ImageNotFound: no such image on this engine.
        """
        try:
            return str(self.client.images.get(image).id)
        except DockerImageNotFound:
            raise ImageNotFound(image) from None
