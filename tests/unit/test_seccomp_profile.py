"""The tool seccomp profile as data: sound, commented, and without the calls we removed.

The dynamic half (a probe in a real container) is tests/integration/test_seccomp.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from writ.launcher import _seccomp
from writ.launcher._seccomp import (
    FORBIDDEN_SYSCALLS,
    load_profile,
    profile_syscalls,
    validate_profile,
)

# What the tool profile must remove from Docker's default (each group is explained under the
# profile's "removed" key).
REMOVED_FROM_DOCKER_DEFAULT = {
    "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "process_vm_readv",
    "process_vm_writev", "userfaultfd", "perf_event_open", "bpf", "add_key", "keyctl",
    "request_key", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount",
    "move_mount", "open_tree", "unshare", "setns",
}
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
SOCK_NONBLOCK, SOCK_CLOEXEC, SOCK_RAW = 0x800, 0x80000, 3


def tool_profile() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load_profile("tool"))
    return data


def entries_for(syscall: str) -> list[dict[str, Any]]:
    return [e for e in tool_profile()["syscalls"] if syscall in e["names"]]


def test_tool_profile_validates() -> None:
    assert validate_profile("tool") == []


def test_forbidden_syscalls_are_absent() -> None:
    assert FORBIDDEN_SYSCALLS & set(profile_syscalls("tool")) == set()


def test_brief_removals_are_forbidden_and_documented() -> None:
    assert REMOVED_FROM_DOCKER_DEFAULT <= FORBIDDEN_SYSCALLS
    documented = {n for group in tool_profile()["removed"] for n in group["names"]}
    assert REMOVED_FROM_DOCKER_DEFAULT <= documented


def test_profile_json_parses_and_is_compact() -> None:
    text = load_profile("tool")
    on_disk = json.loads((_seccomp.PROFILE_DIR / "tool.json").read_text())
    assert json.loads(text) == on_disk
    assert "\n" not in text
    assert load_profile("tool") is text  # cached


def test_every_entry_has_a_comment() -> None:
    profile = tool_profile()
    assert profile["comment"].strip()
    for entry in profile["syscalls"] + profile["removed"]:
        assert isinstance(entry.get("comment"), str) and entry["comment"].strip(), entry


def test_profile_is_an_allowlist_for_x86() -> None:
    profile = tool_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_profile_syscalls_maps_actions() -> None:
    actions = profile_syscalls("tool")
    assert actions["read"] == "SCMP_ACT_ALLOW"
    assert actions["socket"] == "SCMP_ACT_ALLOW"
    assert actions["clone3"] == "SCMP_ACT_ERRNO"
    assert "ptrace" not in actions


def test_socket_only_for_unix_inet_inet6_and_never_raw() -> None:
    entries = entries_for("socket")
    assert entries
    allowed = set()
    for entry in entries:
        assert entry["action"] == "SCMP_ACT_ALLOW"
        domain, stype = sorted(entry["args"], key=lambda a: a["index"])
        assert (domain["index"], domain["op"]) == (0, "SCMP_CMP_EQ")
        assert (stype["index"], stype["op"]) == (1, "SCMP_CMP_MASKED_EQ")
        # the mask ignores exactly SOCK_NONBLOCK and SOCK_CLOEXEC in the low 32 bits
        assert stype["value"] == 0xFFFFFFFF & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
        allowed.add((domain["value"], stype["valueTwo"]))
    assert {d for d, _ in allowed} == {1, 2, 10}  # AF_UNIX, AF_INET, AF_INET6
    assert all(t != SOCK_RAW for _, t in allowed)
    assert entries_for("socketpair")[0]["args"] == [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]


def test_clone_refuses_every_namespace_flag_and_clone3_says_enosys() -> None:
    (clone,) = entries_for("clone")
    (cond,) = clone["args"]
    assert (cond["index"], cond["op"], cond.get("valueTwo", 0)) == (0, "SCMP_CMP_MASKED_EQ", 0)
    for flag, bit in CLONE_NAMESPACE_FLAGS.items():
        assert cond["value"] & bit, flag
    (clone3,) = entries_for("clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)


@pytest.fixture
def profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(_seccomp, "PROFILE_DIR", tmp_path)
    load_profile.cache_clear()
    yield tmp_path
    load_profile.cache_clear()


def test_validate_profile_reports_each_kind_of_mistake(profile_dir: Path) -> None:
    bad = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "defaultErrnoRet": 1,
        "syscalls": [
            {"comment": "ok", "names": ["read", "read", "not_a_syscall", "socketcall"],
             "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
            {"comment": "dup", "names": ["write", "ptrace"], "action": "SCMP_ACT_ALLOW"},
            {"comment": "typo", "names": ["clone3"], "action": "SCMP_ACT_ERRNO",
             "errnoret": 38},
            {"comment": "unfiltered", "names": ["socket"], "action": "SCMP_ACT_ALLOW"},
            {"comment": "or, not and", "names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"comment": "conflict", "names": ["close"], "action": "SCMP_ACT_ALLOW"},
            {"comment": "conflict", "names": ["close"], "action": "SCMP_ACT_KILL"},
        ],
        "removed": [{"names": ["close"]}],
    }
    (profile_dir / "bad.json").write_text(json.dumps(bad))
    problems = "\n".join(validate_profile("bad"))
    for expected in ["defaultAction is 'SCMP_ACT_ALLOW'",
                     "'read' is listed twice",
                     "'not_a_syscall' is not a syscall on x86_64",
                     "'socketcall' is not a syscall on x86_64",
                     "forbidden syscall 'socketcall' is allowed",
                     "entry 1 (write): no comment",
                     "'write' is listed in more than one entry",
                     "forbidden syscall 'ptrace' is allowed",
                     "unknown keys ['errnoret']",
                     "'socket' is allowed without argument conditions",
                     "two conditions on argument 0; runc would OR them",
                     "'close' has conflicting actions",
                     "removed group 0: no comment",
                     "'close' is both listed and documented as removed"]:
        assert expected in problems


def test_load_profile_rejects_names_that_are_not_identifiers() -> None:
    with pytest.raises(ValueError, match="not a plain lowercase identifier"):
        load_profile("../tool")


def test_load_profile_unknown_name(profile_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_profile("nope")
