"""The tool seccomp profile, in a real container, in both directions.

Each test starts a container with the hardening the launcher uses (no network, read-only root,
no capabilities, no_new_privs, our seccomp profile, uid 10001, pid and memory limits) and runs
SYSCALL_PROBE in it: a python3 script that makes the named calls (raw ctypes syscall() or the
socket module) and prints one JSON object {check: outcome}. Refused calls must fail with the
exact errno the profile gives (EPERM, or ENOSYS for clone3); the calls Python, grpcio and tini
need must succeed. A control run without the profile shows the refusals come from the filter,
not from missing capabilities.
"""

from __future__ import annotations

import errno
import json
from typing import Any

from writ.launcher._seccomp import load_profile

from tests.conftest import TEST_LABEL, TEST_RUN_ID

HARDENING: dict[str, Any] = {
    "network_mode": "none",
    "read_only": True,
    "cap_drop": ["ALL"],
    "user": "10001:10001",
    "pids_limit": 64,
    "mem_limit": "128m",
}

SYSCALL_PROBE = r'''"""Seccomp probe: run the named checks, print one JSON object {check: outcome}.

An outcome is {"ok": true, "value": ...} when the call succeeded and {"ok": false, "errno": n,
"error": "..."} when it failed with an OSError. Anything else is a probe bug and crashes it.
"""
import ctypes
import json
import os
import socket
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# x86_64 syscall numbers
NR = {"ptrace": 101, "personality": 135, "chroot": 161, "mount": 165, "umount2": 166,
      "pivot_root": 155, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
      "perf_event_open": 298, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
      "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
      "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
      "fsmount": 432, "clone": 56, "clone3": 435}
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17


def _arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, int):
        return ctypes.c_long(a)
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    return a  # a ctypes object passed by reference


def raw(name, *args):
    """syscall(2) by number; the outcome, with the returned fd closed if one came back."""
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *[_arg(a) for a in args])
    if r == -1:
        e = ctypes.get_errno()
        return {"ok": False, "errno": e, "error": os.strerror(e)}
    return {"ok": True, "value": r}


def closing(outcome):
    if outcome["ok"] and outcome["value"] > 2:
        os.close(outcome["value"])
    return outcome


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "errno": exc.errno, "error": str(exc)}


def open_socket(family, type_, proto=0):
    def make():
        with socket.socket(family, type_, proto):
            return "created"
    return attempt(make)


def sleeper():
    return subprocess.Popen(["sleep", "30"])


# -- checks that must fail ---------------------------------------------------------------
def io_uring_setup():
    return closing(raw("io_uring_setup", 4, ctypes.byref(ctypes.create_string_buffer(120))))


def io_uring_enter():
    return raw("io_uring_enter", -1, 0, 0, 0, None, 0)


def io_uring_register():
    return raw("io_uring_register", -1, 0, None, 0)


def ptrace_attach_child():
    child = sleeper()
    try:
        return raw("ptrace", 16, child.pid, None, None)  # PTRACE_ATTACH
    finally:
        child.kill()
        child.wait()


def _iov(buf):
    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    return Iovec(ctypes.cast(buf, ctypes.c_void_p), len(buf))


def process_vm_readv():
    local, remote = ctypes.create_string_buffer(8), ctypes.create_string_buffer(b"secret!")
    return raw("process_vm_readv", os.getpid(), ctypes.byref(_iov(local)), 1,
               ctypes.byref(_iov(remote)), 1, 0)


def process_vm_writev():
    local, remote = ctypes.create_string_buffer(b"patched"), ctypes.create_string_buffer(8)
    return raw("process_vm_writev", os.getpid(), ctypes.byref(_iov(local)), 1,
               ctypes.byref(_iov(remote)), 1, 0)


def userfaultfd():
    return closing(raw("userfaultfd", 0x80000 | 1))  # O_CLOEXEC | UFFD_USER_MODE_ONLY


def perf_event_open():
    return closing(raw("perf_event_open", None, 0, -1, -1, 0))


def bpf():
    return closing(raw("bpf", 0, None, 0))  # BPF_MAP_CREATE


def add_key():
    return raw("add_key", b"user", b"writ-probe", b"x", 1, -2)  # KEY_SPEC_PROCESS_KEYRING


def keyctl():
    return raw("keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID(KEY_SPEC_SESSION_KEYRING)


def request_key():
    return raw("request_key", b"user", b"writ-no-such-key", None, 0)


def mount():
    return raw("mount", b"none", b"/writ-no-such-dir", b"tmpfs", 0, None)


def umount2():
    return raw("umount2", b"/", 0x7FFF0000)  # invalid flags: EINVAL before any permission check


def pivot_root():
    return raw("pivot_root", b"/writ-no-such-dir", b"/writ-no-such-dir")


def chroot():
    return raw("chroot", b"/writ-no-such-dir")


def open_tree():
    return closing(raw("open_tree", -100, b"/", 0))  # AT_FDCWD, no OPEN_TREE_CLONE


def fsopen():
    return closing(raw("fsopen", b"tmpfs", 0))


def unshare_user():
    return raw("unshare", CLONE_NEWUSER)


def setns():
    return raw("setns", -1, 0)


def clone_newuser():
    outcome = raw("clone", CLONE_NEWUSER | SIGCHLD, 0, None, None, 0)
    if outcome["ok"]:
        if outcome["value"] == 0:
            os._exit(0)  # the child: leave at once
        os.waitpid(outcome["value"], 0)
    return outcome


def clone3():
    return raw("clone3", None, 0)


def personality_addr_no_randomize():
    return raw("personality", 0x0040000)


def personality_query():
    return raw("personality", 0xFFFFFFFF)


def socket_netlink():
    return open_socket(16, socket.SOCK_RAW, 0)  # AF_NETLINK, NETLINK_ROUTE


def socket_packet():
    return open_socket(17, socket.SOCK_DGRAM, 0)  # AF_PACKET


def socket_vsock():
    return open_socket(40, socket.SOCK_STREAM, 0)  # AF_VSOCK


def socket_alg():
    return open_socket(38, socket.SOCK_SEQPACKET, 0)  # AF_ALG: the kernel crypto API


def socket_inet_raw():
    return open_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def socket_inet6_raw():
    return open_socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)


def socket_unix_raw():
    return open_socket(socket.AF_UNIX, socket.SOCK_RAW, 0)


def socketpair_inet():
    def make():
        a, b = socket.socketpair(socket.AF_INET, socket.SOCK_STREAM)
        a.close()
        b.close()
        return "created"
    return attempt(make)


# -- checks that must succeed -------------------------------------------------------------
def unix_socketpair():
    def run():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with a, b:
            a.sendall(b"ping")
            return b.recv(4).decode()
    return attempt(run)


def unix_abstract_listen():
    def run():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
            srv.bind("\0writ-probe-unix")
            srv.listen()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as c:
                c.setblocking(True)
                c.connect("\0writ-probe-unix")
                conn, _ = srv.accept()
                with conn:
                    c.sendall(b"pong")
                    return conn.recv(4).decode()
    return attempt(run)


def inet_loopback():
    def run():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            with socket.create_connection(srv.getsockname(), timeout=5) as c:
                conn, _ = srv.accept()
                with conn:
                    c.sendall(b"tcp!")
                    return conn.recv(4).decode()
    return attempt(run)


def inet_udp_and_inet6():
    def run():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
            u.bind(("127.0.0.1", 0))
            return [u.getsockname()[0], s6.family.name]
    return attempt(run)


def threads():
    import threading
    def run():
        lock, results = threading.Lock(), []
        def work(i):
            with lock:
                results.append(i)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return len(results)
    return attempt(run)


def mmap_anon():
    import mmap
    def run():
        with mmap.mmap(-1, 1 << 20) as m:
            m[:5] = b"hello"
            return m[:5].decode()
    return attempt(run)


def eventfd_epoll():
    import select
    def run():
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        ep = select.epoll()
        try:
            ep.register(efd, select.EPOLLIN)
            os.eventfd_write(efd, 3)
            events = ep.poll(1)
            return [len(events), os.eventfd_read(efd)]
        finally:
            ep.close()
            os.close(efd)
    return attempt(run)


def fork_and_subprocess():
    def run():
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        # posix_spawn-based: glibc tries clone3 first and must fall back to clone on ENOSYS
        out = subprocess.run(["/bin/echo", "spawned"], capture_output=True, check=True)
        return [os.waitstatus_to_exitcode(status), out.stdout.decode().strip()]
    return attempt(run)


def randomness_and_memfd():
    def run():
        fd = os.memfd_create("writ-probe", os.MFD_CLOEXEC)
        os.close(fd)
        return [len(os.urandom(16)), len(os.getrandom(16))]
    return attempt(run)


def asyncio_loop():
    import asyncio
    async def main():
        await asyncio.sleep(0.01)
        proc = await asyncio.create_subprocess_exec("/bin/true")
        return await proc.wait()
    return attempt(lambda: asyncio.run(main()))


def grpc_channel():
    def run():
        import concurrent.futures
        import grpc
        handler = grpc.method_handlers_generic_handler(
            "writ.Probe", {"Echo": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2),
                             handlers=[handler])
        server.add_insecure_port("unix-abstract:writ-probe-grpc")
        server.start()
        try:
            with grpc.insecure_channel("unix-abstract:writ-probe-grpc") as channel:
                grpc.channel_ready_future(channel).result(timeout=20)
                echo = channel.unary_unary("/writ.Probe/Echo")
                return [grpc.__version__, echo(b"through grpc", timeout=20).decode()]
        finally:
            server.stop(None)
    return attempt(run)


def status():
    def fields(path):
        keep = ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapInh", "CapPrm", "CapEff",
                "CapBnd", "CapAmb", "Uid")
        with open(path) as f:
            pairs = (line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            return {k: v for k, v in pairs if k in keep}
    return {"ok": True, "value": {"pid1": fields("/proc/1/status"),
                                  "self": fields("/proc/self/status")}}


if __name__ == "__main__":
    names = sys.argv[1:]
    print(json.dumps({name: globals()[name]() for name in names}))
'''

Outcome = dict[str, Any]


def run_probe(docker_client: Any, image: str, *checks: str,
              seccomp: str | None = None) -> dict[str, Outcome]:
    """Run SYSCALL_PROBE with ``checks`` in a hardened container; return its outcomes.

    ``seccomp`` replaces our profile in the security options (only the control test does).
    """
    profile = load_profile() if seccomp is None else seccomp
    container = docker_client.containers.run(
        image, ["python3", "-c", SYSCALL_PROBE, *checks], detach=True,
        labels={TEST_LABEL: TEST_RUN_ID},
        security_opt=["no-new-privileges", f"seccomp={profile}"], **HARDENING)
    try:
        status = container.wait(timeout=120)
        stdout = container.logs(stdout=True, stderr=False).decode()
        stderr = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, f"probe exited {status}: {stderr}"
    outcomes: dict[str, Outcome] = json.loads(stdout)
    assert sorted(outcomes) == sorted(checks)
    return outcomes


def refused_with(outcomes: dict[str, Outcome], code: int) -> dict[str, Outcome]:
    """The outcomes that are *not* a failure with errno ``code`` (empty when all are)."""
    return {name: o for name, o in outcomes.items() if o["ok"] or o["errno"] != code}


EPERM_CHECKS = {
    "io_uring": ["io_uring_setup", "io_uring_enter", "io_uring_register"],
    "ptrace": ["ptrace_attach_child"],
    "process_vm": ["process_vm_readv", "process_vm_writev"],
    "userfaultfd": ["userfaultfd"],
    "perf_bpf": ["perf_event_open", "bpf"],
    "keyring": ["add_key", "keyctl", "request_key"],
    "mount": ["mount", "umount2", "pivot_root", "chroot", "open_tree", "fsopen"],
    "userns": ["unshare_user", "setns"],
    "clone_ns": ["clone_newuser"],
    "personality": ["personality_addr_no_randomize"],
    "netlink": ["socket_netlink"],
    "packet": ["socket_packet"],
    "vsock_alg": ["socket_vsock", "socket_alg"],
    "raw": ["socket_inet_raw", "socket_inet6_raw", "socket_unix_raw"],
    "socketpair": ["socketpair_inet"],
}


def assert_eperm(docker_client: Any, base_image: str, group: str) -> None:
    outcomes = run_probe(docker_client, base_image, *EPERM_CHECKS[group])
    assert refused_with(outcomes, errno.EPERM) == {}, outcomes


def test_io_uring_blocked_by_seccomp(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "io_uring")


def test_ptrace_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "ptrace")


def test_cross_process_memory_access_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "process_vm")


def test_userfaultfd_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "userfaultfd")


def test_perf_events_and_bpf_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "perf_bpf")


def test_keyctl_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "keyring")


def test_mount_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "mount")


def test_user_namespace_unshare_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "userns")


def test_clone_with_namespace_flags_blocked(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "clone_ns")


def test_personality_limited_to_harmless_values(docker_client: Any, base_image: str) -> None:
    outcomes = run_probe(docker_client, base_image, "personality_addr_no_randomize",
                         "personality_query")
    assert outcomes["personality_addr_no_randomize"] == {
        "ok": False, "errno": errno.EPERM, "error": "Operation not permitted"}
    assert outcomes["personality_query"] == {"ok": True, "value": 0}  # PER_LINUX


def test_netlink_socket_blocked_by_seccomp(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "netlink")


def test_packet_socket_blocked_by_seccomp(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "packet")


def test_vsock_and_alg_sockets_blocked_by_seccomp(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "vsock_alg")


def test_raw_sockets_blocked_by_seccomp(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "raw")


def test_socketpair_limited_to_unix(docker_client: Any, base_image: str) -> None:
    assert_eperm(docker_client, base_image, "socketpair")


def test_clone3_returns_enosys(docker_client: Any, base_image: str) -> None:
    outcomes = run_probe(docker_client, base_image, "clone3")
    assert outcomes["clone3"] == {"ok": False, "errno": errno.ENOSYS,
                                  "error": "Function not implemented"}


def test_allowed_syscalls_work(docker_client: Any, base_image: str) -> None:
    outcomes = run_probe(
        docker_client, base_image, "unix_socketpair", "unix_abstract_listen", "inet_loopback",
        "inet_udp_and_inet6", "threads", "mmap_anon", "eventfd_epoll", "fork_and_subprocess",
        "randomness_and_memfd", "asyncio_loop", "grpc_channel")
    failed = {name: o for name, o in outcomes.items() if not o["ok"]}
    assert failed == {}
    assert {name: o["value"] for name, o in outcomes.items()} == {
        "unix_socketpair": "ping",
        "unix_abstract_listen": "pong",
        "inet_loopback": "tcp!",
        "inet_udp_and_inet6": ["127.0.0.1", "AF_INET6"],
        "threads": 8,
        "mmap_anon": "hello",
        "eventfd_epoll": [1, 3],
        "fork_and_subprocess": [7, "spawned"],  # posix_spawn: clone3 ENOSYS, then clone
        "randomness_and_memfd": [16, 16],
        "asyncio_loop": 0,
        "grpc_channel": ["1.85.1", "through grpc"],
    }


def test_pid1_runs_confined_without_privileges(docker_client: Any, base_image: str) -> None:
    status = run_probe(docker_client, base_image, "status")["status"]["value"]
    for process in ("pid1", "self"):  # tini, and the tool it started
        fields = status[process]
        assert fields["Seccomp"] == "2", process  # SECCOMP_MODE_FILTER
        assert fields["Seccomp_filters"] == "1", process
        assert fields["NoNewPrivs"] == "1", process
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert fields[cap] == "0000000000000000", (process, cap)
        assert fields["Uid"].split("\t") == ["10001"] * 4, process


# Calls the kernel itself would answer with something other than EPERM for an unprivileged
# process: without the profile they succeed or fail differently, so the EPERMs above are the
# filter's. (pivot_root, fsopen, AF_PACKET and raw sockets are refused by the missing
# capabilities too; io_uring_setup, ptrace, bpf and user namespaces depend on host sysctls.)
CONTROL_CHECKS = [
    "io_uring_enter", "io_uring_register", "process_vm_readv", "process_vm_writev",
    "userfaultfd", "perf_event_open", "add_key", "keyctl", "request_key", "mount", "umount2",
    "chroot", "open_tree", "setns", "personality_addr_no_randomize", "socket_netlink",
    "socket_vsock", "socket_unix_raw", "socketpair_inet", "clone3",
]


def test_refusals_come_from_the_profile(docker_client: Any, base_image: str) -> None:
    confined = run_probe(docker_client, base_image, *CONTROL_CHECKS)
    unconfined = run_probe(docker_client, base_image, *CONTROL_CHECKS, seccomp="unconfined")
    expected = {name: errno.ENOSYS if name == "clone3" else errno.EPERM for name in CONTROL_CHECKS}
    assert {n: o.get("errno") for n, o in confined.items()} == expected
    same = {n: o for n, o in unconfined.items() if not o["ok"] and o["errno"] == expected[n]}
    assert same == {}, f"refused even without the profile: {same}"
