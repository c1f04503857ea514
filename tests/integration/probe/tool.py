"""probe: runs the attack named in the input and reports errno names, never raising.

Input: {"action": "<name>", ...}. Output: {"action": ..., "result": ...}.
"""

import errno
import os
import socket
import time


def _err(exc):
    code = getattr(exc, "errno", None)
    return {"error": errno.errorcode.get(code, str(code)) if code else type(exc).__name__,
            "message": str(exc)}


def net_connect(args):
    out = {}
    for host, port in args.get("targets", [["1.1.1.1", 80], ["172.17.0.1", 2375]]):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((host, port))
            out[f"{host}:{port}"] = {"connected": True}
        except OSError as exc:
            out[f"{host}:{port}"] = _err(exc)
        finally:
            s.close()
    return out


def write_rootfs(args):
    out = {}
    for path in ("/etc/writ-probe", "/opt/tool/x", "/usr/bin/x"):
        try:
            with open(path, "w") as f:
                f.write("x")
            out[path] = {"written": True}
        except OSError as exc:
            out[path] = _err(exc)
    try:
        with open("/tmp/ok", "w") as f:
            f.write("tmp is writable")
        out["/tmp/ok"] = {"written": True}
    except OSError as exc:
        out["/tmp/ok"] = _err(exc)
    return out


def mounts(args):
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return [{"target": r[4], "source_root": r[3], "options": r[5],
             "fstype": r[r.index("-") + 1]} for r in rows]


def host_paths(args):
    return {p: os.path.exists(p) for p in args.get("paths", [])}


def caps(args):
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    out = {k: status.get(k, "").strip() for k in
           ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Uid")}
    for name, fn in (("setuid0", lambda: os.setuid(0)), ("chown", lambda: os.chown("/tmp", 0, 0)),
                     ("chroot", lambda: os.chroot("/tmp"))):
        try:
            fn()
            out[name] = {"ok": True}
        except OSError as exc:
            out[name] = _err(exc)
    return out


def raw_socket(args):
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        return {"created": True}
    except OSError as exc:
        return _err(exc)


def _flip_mac(token):
    """Our token with one bit of its MAC flipped (the MAC is the last field serialized)."""
    import base64

    body = token[len("writ1."):]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 0x01
    return "writ1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def use_token(args):
    """Talk to our own broker socket with a token the test supplies, or with our own token
    forged (``forge_own``)."""
    from writ_tool import _broker, files

    token = _flip_mac(os.environ["WRIT_TOKEN"]) if args.get("forge_own") else args["token"]
    _broker.connect(os.environ["WRIT_SOCKET"], token)
    try:
        return {"text": files.read_text(args.get("path", "reports/q3.csv"))}
    except _broker.BrokerError as exc:
        return {"code": exc.code, "message": exc.message}


def read(args):
    from writ_tool import BrokerError, files

    try:
        return {"text": files.read_text(args["path"], workspace=args.get("workspace", ""))}
    except BrokerError as exc:
        return {"code": exc.code, "message": exc.message}


def listdir(args):
    from writ_tool import BrokerError, files

    try:
        return {"entries": [[e.name, e.kind] for e in files.listdir(args.get("path", ""))]}
    except BrokerError as exc:
        return {"code": exc.code, "message": exc.message}


def read_loop(args):
    """Read a path repeatedly for a while; report every distinct outcome (race tests)."""
    from writ_tool import BrokerError, files

    seen = {}
    deadline = time.monotonic() + args.get("seconds", 2)
    while time.monotonic() < deadline:
        try:
            key = "text:" + files.read_text(args["path"])
        except BrokerError as exc:
            key = "code:" + exc.code
        seen[key] = seen.get(key, 0) + 1
    return seen


def env(args):
    return sorted(os.environ)


def env_values(args):
    """The whole environment, values included (token-containment tests)."""
    return dict(os.environ)


def sleep(args):
    time.sleep(args.get("seconds", 60))
    return {"slept": True}


def exit_silently(args):
    os._exit(args.get("code", 3))


def threads(args):
    import threading

    started = 0
    stop = threading.Event()
    try:
        for _ in range(args.get("max", 500)):
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    except RuntimeError as exc:
        result = {"started": started, "error": str(exc)}
    else:
        result = {"started": started}
    stop.set()
    return result


ACTIONS = {f.__name__: f for f in (net_connect, write_rootfs, mounts, host_paths, caps,
                                   raw_socket, use_token, read, listdir, read_loop, env,
                                   env_values, sleep, exit_silently, threads)}


def main(args):
    return {"action": args["action"], "result": ACTIONS[args["action"]](args)}
