"""Seccomp profiles for tool containers: load them as Docker wants them, and check them.

A profile is commented data in ``seccomp/<name>.json``, in Docker's seccomp JSON format, derived
from Docker's default profile (see the file's top-level ``comment``). The launcher hands Docker
the JSON *text*: ``security_opt=["no-new-privileges", "seccomp=" + load_profile()]``.

``validate_profile`` is the static half of the profile's tests (the dynamic half runs a probe in
a real container, tests/integration/test_seccomp.py). It resolves names with libseccomp through
``pyseccomp``, the same library runc uses to compile the filter, so a name it cannot resolve is a
name runc would silently skip.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pyseccomp

PROFILE_DIR = Path(__file__).resolve().parent / "seccomp"

# Never allowed in a tool container, whatever a profile says. Each group is explained in the
# profile's "removed" list; validate_profile reports any of them appearing as allowed.
FORBIDDEN_SYSCALLS: frozenset[str] = frozenset({
    # io_uring: I/O without a syscall per operation, invisible to argument filters
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # reading or writing another process's memory
    "ptrace", "process_vm_readv", "process_vm_writev",
    # kernel race-condition and attack-surface primitives
    "userfaultfd", "perf_event_open", "bpf",
    # the kernel keyring is not namespaced
    "add_key", "keyctl", "request_key",
    # the mount table and root
    "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr",
    # namespaces
    "unshare", "setns",
    # 32-bit socket multiplexer: would bypass the socket domain filter
    "socketcall",
    # capability-gated in Docker's default; tool containers hold no capabilities
    "kcmp", "pidfd_getfd", "process_madvise", "open_by_handle_at", "name_to_handle_at",
    "fanotify_init", "lookup_dcookie", "quotactl", "quotactl_fd", "sethostname",
    "setdomainname", "syslog", "reboot", "init_module", "finit_module", "delete_module", "acct",
    "iopl", "ioperm", "settimeofday", "stime", "clock_settime", "vhangup", "get_mempolicy",
    "mbind", "set_mempolicy", "set_mempolicy_home_node",
    # never allowed by Docker either: replacing the kernel, swap, raw module loading
    "kexec_load", "kexec_file_load", "swapon", "swapoff", "create_module",
})

# Syscalls a profile may allow only under argument conditions (socket by domain and type,
# socketpair by domain, clone without namespace flags, personality by value).
ARG_FILTERED_SYSCALLS: frozenset[str] = frozenset({"socket", "socketpair", "clone",
                                                   "personality"})

# Actions under which a listed syscall does not run.
DENY_ACTIONS: frozenset[str] = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                          "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
                                          "SCMP_ACT_TRAP"})
_ACTIONS = DENY_ACTIONS | {"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"}
_OPS = frozenset({"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                  "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"})
# Keys Docker 20.10 reads, plus our documentation keys ("comment", "removed"). Docker ignores
# unknown keys, so a typo such as "errnoret" would silently change meaning: report it.
_TOP_KEYS = frozenset({"comment", "defaultAction", "defaultErrnoRet", "architectures",
                       "syscalls", "removed"})
_ENTRY_KEYS = frozenset({"comment", "names", "action", "errnoRet", "args"})
_ARG_KEYS = frozenset({"index", "value", "valueTwo", "op"})
_REMOVED_KEYS = frozenset({"comment", "names"})
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def _path(name: str) -> Path:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"seccomp profile name {name!r} is not a plain lowercase identifier")
    return PROFILE_DIR / f"{name}.json"


@functools.cache
def load_profile(name: str = "tool") -> str:
    """Return a profile as compact JSON text, ready for ``security_opt``.

    The file is read and re-serialised once per process; later calls return the cached text.

    Args:
        name: profile name, the file ``seccomp/<name>.json`` next to this module.

    Returns:
        The profile as JSON text without insignificant whitespace.

    Raises:
        ValueError: ``name`` is not a plain identifier, or the file is not a JSON object.
        FileNotFoundError: there is no profile with that name.
    """
    data = json.loads(_path(name).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        # ValueError, not TypeError: the file's content is wrong, not the caller's argument.
        raise ValueError(f"seccomp profile {name!r} is not a JSON object")  # noqa: TRY004
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _parsed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load_profile(name))
    return data


def _entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    entries = data.get("syscalls")
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict)]


def _names(entry: dict[str, Any]) -> list[str]:
    names = entry.get("names")
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str)]


def profile_syscalls(name: str = "tool") -> dict[str, str]:
    """Map every syscall a profile lists to the action it gets.

    A syscall listed in several entries (argument-filtered variants such as ``socket``) maps
    to the action of its first entry; ``validate_profile`` reports entries that disagree.
    Syscalls the profile does not list get its ``defaultAction`` and are not in the map.

    Args:
        name: profile name, as for :func:`load_profile`.

    Returns:
        ``{syscall name: action}``, e.g. ``{"read": "SCMP_ACT_ALLOW",
        "clone3": "SCMP_ACT_ERRNO", ...}``.

    Raises:
        ValueError: as for :func:`load_profile`.
        FileNotFoundError: as for :func:`load_profile`.
    """
    actions: dict[str, str] = {}
    for entry in _entries(_parsed(name)):
        action = entry.get("action")
        for syscall in _names(entry):
            actions.setdefault(syscall, str(action))
    return actions


def _resolves(syscall: str) -> bool:
    # libseccomp answers __NR_SCMP_ERROR (-1) for an unknown name and a negative pseudo-number
    # for a name that exists only on other architectures (e.g. socketcall on x86_64).
    number: int = pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, syscall)
    return number >= 0


def _check_args(where: str, entry: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    args = entry.get("args", [])
    if not isinstance(args, list):
        return [f"{where}: 'args' is not a list"]
    seen_index: set[object] = set()
    for arg in args:
        if not isinstance(arg, dict):
            problems.append(f"{where}: an argument condition is not an object")
            continue
        if unknown := sorted(set(arg) - _ARG_KEYS):
            problems.append(f"{where}: unknown argument keys {unknown}")
        index = arg.get("index")
        if not isinstance(index, int) or not 0 <= index <= 5:
            problems.append(f"{where}: argument index {index!r} is not 0..5")
        if arg.get("op") not in _OPS:
            problems.append(f"{where}: unknown comparison {arg.get('op')!r}")
        if index in seen_index:
            # runc turns same-index conditions into separate rules, i.e. OR instead of AND.
            problems.append(f"{where}: two conditions on argument {index}; runc would OR them")
        seen_index.add(index)
    return problems


def _check_entry(i: int, entry: dict[str, Any]) -> list[str]:
    names = _names(entry)
    where = f"entry {i} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
    problems: list[str] = []
    if unknown := sorted(set(entry) - _ENTRY_KEYS):
        problems.append(f"{where}: unknown keys {unknown} (capability or arch includes are "
                        "not used: tool containers hold no capabilities)")
    comment = entry.get("comment")
    if not isinstance(comment, str) or not comment.strip():
        problems.append(f"{where}: no comment saying who needs it")
    if not names or len(names) != len(entry.get("names") or []):
        problems.append(f"{where}: 'names' must be a non-empty list of strings")
    action = entry.get("action")
    if action not in _ACTIONS:
        problems.append(f"{where}: unknown action {action!r}")
    if "errnoRet" in entry and action != "SCMP_ACT_ERRNO":
        problems.append(f"{where}: errnoRet given for action {action!r}")
    for syscall in names:
        if not _resolves(syscall):
            problems.append(f"{where}: {syscall!r} is not a syscall on x86_64")
        if action not in DENY_ACTIONS:
            if syscall in FORBIDDEN_SYSCALLS:
                problems.append(f"{where}: forbidden syscall {syscall!r} is allowed")
            if syscall in ARG_FILTERED_SYSCALLS and not entry.get("args"):
                problems.append(f"{where}: {syscall!r} is allowed without argument conditions")
    for syscall in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: {syscall!r} is listed twice")
    return problems + _check_args(where, entry)


def validate_profile(name: str = "tool") -> list[str]:
    """Check a profile for the mistakes Docker and runc would accept silently.

    Reported: unknown keys (Docker ignores them, so a typo changes meaning), a default action
    other than ``SCMP_ACT_ERRNO`` (profiles are allowlists), entries without a comment, names
    libseccomp cannot resolve on x86_64 (runc skips them without a word), a syscall listed
    twice (except argument-filtered variants, which are ORed), one syscall under different
    actions, a syscall from :data:`FORBIDDEN_SYSCALLS` allowed, a syscall from
    :data:`ARG_FILTERED_SYSCALLS` allowed unconditionally, two conditions on the same argument
    in one entry (runc ORs those instead of ANDing), and a syscall both listed and documented
    under ``removed``.

    Args:
        name: profile name, as for :func:`load_profile`.

    Returns:
        One human-readable line per problem; empty when the profile is sound.

    Raises:
        ValueError: as for :func:`load_profile`.
        FileNotFoundError: as for :func:`load_profile`.
    """
    data = _parsed(name)
    problems: list[str] = []
    if unknown := sorted(set(data) - _TOP_KEYS):
        problems.append(f"unknown top-level keys {unknown}")
    if data.get("defaultAction") != "SCMP_ACT_ERRNO":
        problems.append(f"defaultAction is {data.get('defaultAction')!r}, not SCMP_ACT_ERRNO")
    if data.get("defaultErrnoRet") != 1:
        problems.append(f"defaultErrnoRet is {data.get('defaultErrnoRet')!r}, not 1 (EPERM)")
    if not isinstance(data.get("syscalls"), list) or not data["syscalls"]:
        problems.append("'syscalls' is missing or empty")

    entries = _entries(data)
    unconditional: dict[str, int] = {}
    conditional: dict[str, int] = {}
    actions: dict[str, set[str]] = {}
    for i, entry in enumerate(entries):
        problems += _check_entry(i, entry)
        for syscall in set(_names(entry)):
            bucket = conditional if entry.get("args") else unconditional
            bucket[syscall] = bucket.get(syscall, 0) + 1
            actions.setdefault(syscall, set()).add(str(entry.get("action")))
    for syscall in sorted(unconditional):
        if unconditional[syscall] > 1 or syscall in conditional:
            problems.append(f"{syscall!r} is listed in more than one entry")
    for syscall in sorted(s for s, acts in actions.items() if len(acts) > 1):
        problems.append(f"{syscall!r} has conflicting actions {sorted(actions[syscall])}")

    removed = data.get("removed", [])
    if not isinstance(removed, list):
        problems.append("'removed' is not a list")
        removed = []
    documented: set[str] = set()
    for i, group in enumerate(removed):
        if not isinstance(group, dict) or not isinstance(group.get("names"), list):
            problems.append(f"removed group {i}: not an object with a 'names' list")
            continue
        if unknown := sorted(set(group) - _REMOVED_KEYS):
            problems.append(f"removed group {i}: unknown keys {unknown}")
        if not isinstance(group.get("comment"), str) or not group["comment"].strip():
            problems.append(f"removed group {i}: no comment saying why")
        documented.update(n for n in group["names"] if isinstance(n, str))
    for syscall in sorted(documented & set(actions)):
        problems.append(f"{syscall!r} is both listed and documented as removed")
    return problems
