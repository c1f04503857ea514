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


def forged_write(args):
    """Write a few MiB with our own token forged: refused before the broker takes the pipe,
    which must not leave the tool blocked on it."""
    from writ_tool import _broker, files

    _broker.connect(os.environ["WRIT_SOCKET"], _flip_mac(os.environ["WRIT_TOKEN"]))
    t0 = time.monotonic()
    try:
        files.write_bytes(args["path"], b"x" * (4 << 20))
        out = {"written": True}
    except _broker.BrokerError as exc:
        out = {"code": exc.code, "message": exc.message}
    out["seconds"] = time.monotonic() - t0
    return out


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


def pay(args):
    """Payments through the SDK: args["payments"] is a list of {payee, amount, currency,
    memo, key} (amount may be any JSON value; "raw": send it past the SDK's own check);
    each outcome is {"ok": {...}} or {"code", "message"}. args["get"]: keys to look up."""
    from writ_tool import BrokerError, _broker
    from writ_tool import pay as sdk_pay
    from writ_tool._proto import tool_pb2

    if "wait_until" in args:  # unix seconds: pay only after this (expiry, revocation)
        time.sleep(max(0.0, args["wait_until"] - time.time()))
    out = []
    for p in args.get("payments", []):
        time.sleep(args.get("pause", 0))  # spread payments out (a crash test kills midway)
        try:
            if p.get("raw"):
                r = _broker.connection().unary("Pay", tool_pb2.PayRequest(
                    payee=p["payee"], amount=p["amount"], currency=p.get("currency", "EUR"),
                    memo=p.get("memo", ""), idempotency_key=p.get("key", "")))
                got = {"payment_id": r.payment_id, "transfer_id": r.transfer_id,
                       "replayed": r.replayed}
            else:
                r = sdk_pay.send(p["payee"], p["amount"], p.get("currency", "EUR"),
                                 p.get("memo", ""), p.get("key"))
                got = {"payment_id": r.payment_id, "transfer_id": r.transfer_id,
                       "replayed": r.replayed, "approval_id": r.approval_id}
            out.append({"ok": got})
        except BrokerError as exc:
            out.append({"code": exc.code, "message": exc.message})
        except (TypeError, ValueError) as exc:  # an amount the protobuf cannot hold
            out.append({"code": "CLIENT", "message": f"{type(exc).__name__}: {exc}"})
    for key in args.get("get", []):
        try:
            g = sdk_pay.get(key)
            out.append({"ok": {"payment_id": g.payment_id, "status": g.status}})
        except BrokerError as exc:
            out.append({"code": exc.code, "message": exc.message})
    return out


def _outcome(fn):
    from writ_tool import BrokerError

    try:
        return {"ok": fn()}
    except BrokerError as exc:
        return {"code": exc.code, "message": exc.message}


def _fs_op(spec):
    """One file operation through the SDK, by name (fs_ops below)."""
    from writ_tool import files

    op, path, ws = spec["op"], spec.get("path", ""), spec.get("workspace", "")
    data = spec.get("data", "").encode()
    if op == "read":
        return files.read_text(path, workspace=ws)
    if op == "open":  # the descriptor path, falling back to streaming
        with files.open(path, workspace=ws) as f:
            return f.read()
    if op == "stat":
        st = files.stat(path, workspace=ws)
        return [st.kind, st.size]
    if op == "list":
        return [[e.name, e.kind] for e in files.listdir(path, workspace=ws)]
    if op == "write":  # create or replace
        return files.write_bytes(path, data, workspace=ws)
    if op == "replace":
        return files.write_bytes(path, data, workspace=ws, create=False)
    if op == "create":
        return files.create(path, data, workspace=ws)
    if op == "mkdir":
        return files.mkdir(path, workspace=ws)
    if op == "delete":
        return files.delete(path, workspace=ws)
    if op == "rename":
        return files.rename(path, spec["to"], workspace=ws, replace=spec.get("replace", False))
    if op in ("open_w", "open_x"):  # text mode through the file-like API
        with files.open(path, op[-1], workspace=ws) as f:
            f.write(spec.get("data", ""))
        return f.buffer.bytes_written
    if op == "copy":  # a workspace file into /tmp, changed there, and back to spec["to"]
        local = files.copy_in(path, workspace=ws)
        with open(local, "ab") as f:
            f.write(data)
        written = files.copy_out(local, spec["to"], workspace=ws)
        os.unlink(local)
        return [local.startswith("/tmp/writ-"), written]
    raise ValueError(f"unknown op {op!r}")


def fs_ops(args):
    """Run a list of file operations, one outcome each: {"ok": result} or {"code", "message"}."""
    return [_outcome(lambda spec=spec: _fs_op(spec)) for spec in args["ops"]]


def write_stream(args):
    """Stream `chunk` bytes per message, `chunks` times (0: until the broker refuses), then
    finish (`finish`), abort (`abort`: raise inside the with block) or just stop sending."""
    from writ_tool import BrokerError, files

    chunk = b"w" * args.get("chunk", 1 << 20)
    sent = 0
    try:
        with files.open(args["path"], "wb") as f:
            while args.get("chunks", 0) == 0 or sent < args["chunks"] * len(chunk):
                f.write(chunk)
                sent += len(chunk)
            if args.get("abort"):
                raise RuntimeError("tool gave up")
            if args.get("die"):
                time.sleep(0.5)  # let the chunks reach the broker, then die mid-write
                os._exit(3)
    except BrokerError as exc:
        return {"code": exc.code, "message": exc.message, "sent": sent}
    except RuntimeError as exc:
        return {"aborted": str(exc), "sent": sent}
    return {"ok": f.bytes_written, "sent": sent}


def raw_call(args):
    """Send raw bytes as the request of `method` (unary) or as messages of a client stream."""
    import base64

    import grpc
    from writ_tool import _broker

    conn = _broker.connection()
    bodies = [base64.b64decode(b) for b in args["messages"]]
    if args.get("big_data"):  # one more message: `big_data` bytes of data, finishing
        from writ_tool._proto import tool_pb2

        bodies.append(tool_pb2.WriteFileRequest(data=b"x" * args["big_data"],
                                                finish=True).SerializeToString())
    ident = lambda b: b
    try:
        if args.get("stream"):
            call = conn.channel.stream_unary(args["method"], request_serializer=ident,
                                             response_deserializer=ident)
            call(iter(bodies), metadata=conn.metadata, timeout=10)
        else:
            call = conn.channel.unary_unary(args["method"], request_serializer=ident,
                                            response_deserializer=ident)
            call(bodies[0], metadata=conn.metadata, timeout=10)
        return {"ok": True}
    except grpc.RpcError as err:
        return {"code": err.code().name, "message": err.details()}


def descriptor(args):
    """Take a descriptor from the broker, read it, then try to write through it."""
    from writ_tool import files

    fd = files.open_descriptor(args["path"])
    if fd is None:
        return {"descriptor": None}
    out = {"text": os.pread(fd, 1 << 20, 0).decode()}
    try:
        os.write(fd, b"x")
        out["write"] = "written"
    except OSError as exc:
        out["write"] = errno.errorcode[exc.errno]
    try:
        os.close(os.open(f"/proc/self/fd/{fd}", os.O_WRONLY))
        out["reopen"] = "opened for writing"
    except OSError as exc:
        out["reopen"] = errno.errorcode[exc.errno]
    os.close(fd)
    return out


def ticket_twice(args):
    """Redeem one descriptor ticket twice."""
    from writ_tool import _broker
    from writ_tool._proto import tool_pb2

    conn = _broker.connection()
    resp = conn.unary("OpenFile", tool_pb2.OpenFileRequest(path=args["path"]))
    out = []
    for _ in range(2):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(os.path.join(os.path.dirname(conn.socket_path), "fd.sock"))
            s.sendall(resp.ticket.encode() + b"\n")
            msg, fds, _f, _a = socket.recv_fds(s, 256, 1)
        for fd in fds:
            os.close(fd)
        out.append({"status": msg[:1].hex(), "fds": len(fds), "message": msg[1:].decode()})
    return out


def hand_in(args):
    """Offer the descriptor socket things that are not the read end of a pipe, then write
    with bad source tickets (each answer is reported)."""
    import tempfile

    import grpc
    from writ_tool import _broker
    from writ_tool._proto import tool_pb2

    conn = _broker.connection()
    path = os.path.join(os.path.dirname(conn.socket_path), "fd.sock")

    def offer(fds, line=b"send\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            socket.send_fds(s, [line], fds)
            return s.recv(256).decode(errors="replace")

    def write(header):
        try:
            conn.stream_unary("WriteFile", iter([header])).result()
            return {"ok": True}
        except grpc.RpcError as exc:
            err = _broker.translate(exc)
            return {"code": err.code, "message": err.message}

    out = {}
    r, w = os.pipe()
    a, b = socket.socketpair()
    with tempfile.TemporaryFile() as tmp:
        out["file"] = offer([tmp.fileno()])
    out["write_end"] = offer([w])
    out["socket"] = offer([a.fileno()])
    out["two"] = offer([r, r])
    out["not_send"] = offer([r], b"take\n")
    good = offer([r])
    out["good"] = good[:1]
    head = {"path": args["path"], "mode": 3}
    out["unknown_ticket"] = write(tool_pb2.WriteFileRequest(source_ticket="0" * 32, **head))
    out["data_with_pipe"] = write(tool_pb2.WriteFileRequest(source_ticket=good[1:].strip(),
                                                            data=b"x", **head))
    for x in (r, w, a, b):
        os.close(x) if isinstance(x, int) else x.close()
    return out


def fs_loop(args):
    """Repeat a list of file operations for a while; count each distinct outcome (races)."""
    seen = {}
    deadline = time.monotonic() + args.get("seconds", 2)
    while time.monotonic() < deadline:
        for spec in args["ops"]:
            out = _outcome(lambda spec=spec: _fs_op(spec))
            key = "ok" if "ok" in out else "code:" + out["code"]
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


def _fetch_one(spec):
    """One request through writ_tool.net: status, headers, body (text) or the refusal."""
    from writ_tool import net

    def go():
        body = spec.get("body")
        if spec.get("body_bytes"):
            body = b"b" * spec["body_bytes"]
        r = net.fetch(spec["url"], method=spec.get("method", "GET"),
                      headers=spec.get("headers"), body=body, json=spec.get("json"),
                      timeout=spec.get("timeout"),
                      follow_redirects=spec.get("follow", False))
        return {"status": r.status, "headers": r.headers, "url": r.url,
                "redirects": r.redirects, "body": r.content.decode("latin-1")[:4096],
                "length": len(r.content)}

    return _outcome(go)


def fetch(args):
    return [_fetch_one(spec) for spec in args["requests"]]


def _ssl_context(args):
    import ssl

    ctx = ssl.create_default_context()
    if args.get("cadata"):
        ctx.load_verify_locations(cadata=args["cadata"])
    return ctx


def proxy(args):
    """Unmodified urllib through HTTP_PROXY/HTTPS_PROXY: {status, body} or the HTTP error
    the forwarder answered with (status, X-Writ-Status, body)."""
    import urllib.error
    import urllib.request

    out = []
    if args.get("proxy_env") is not None:  # unset the variables, or point them elsewhere
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
                     "all_proxy"):
            os.environ.pop(name, None)
            if args["proxy_env"]:
                os.environ[name] = args["proxy_env"]
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(), urllib.request.HTTPSHandler(context=_ssl_context(args)))
    for spec in args["requests"]:
        data = spec["body"].encode() if "body" in spec else None
        req = urllib.request.Request(spec["url"], data=data, method=spec.get("method", "GET"),
                                     headers=spec.get("headers", {}))
        try:
            with opener.open(req, timeout=20) as r:
                out.append({"status": r.status, "body": r.read().decode("latin-1")[:4096]})
        except urllib.error.HTTPError as e:
            out.append({"status": e.code, "writ": e.headers.get("X-Writ-Status"),
                        "body": e.read().decode("latin-1")[:2048]})
        except (urllib.error.URLError, OSError) as e:
            out.append({"error": type(e).__name__, "message": str(e)[:300]})
    return {"proxy": os.environ.get("HTTPS_PROXY"), "results": out}


def tunnel_sni(args):
    """CONNECT through the forwarder to args["connect"], then a TLS handshake asking for
    args["sni"]: {"connect": status line, "tls": ok / error, "body": first bytes}."""
    import ssl

    port = int(os.environ["HTTPS_PROXY"].rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"CONNECT {args['connect']} HTTP/1.1\r\nHost: {args['connect']}\r\n\r\n"
              .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = s.recv(4096)
        if not data:
            break
        head += data
    out = {"connect": head.split(b"\r\n", 1)[0].decode("latin-1")}
    if not out["connect"].endswith("200 Connection Established"):
        out["body"] = head.split(b"\r\n\r\n", 1)[-1].decode("latin-1")
        return out
    ctx = _ssl_context(args)
    ctx.check_hostname = args.get("check_hostname", True)
    try:
        tls = ctx.wrap_socket(s, server_hostname=args["sni"])
        tls.sendall(f"GET {args.get('path', '/hello')} HTTP/1.1\r\nHost: {args['sni']}\r\n"
                    "Connection: close\r\n\r\n".encode())
        body = b""
        while True:
            data = tls.recv(65536)
            if not data:
                break
            body += data
        out["tls"] = "ok"
        out["body"] = body.decode("latin-1")[:2048]
    except (OSError, ssl.SSLError) as exc:
        out["tls"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def secret_hunt(args):
    """Look for args["needle"] everywhere the tool can read: environment, /proc/self,
    /tmp, the SDK's files, its own memory maps are not readable for other processes."""
    needle = args["needle"].encode()
    found = []
    if needle in b"\0".join(f"{k}={v}".encode() for k, v in os.environ.items()):
        found.append("environ")
    for root in ("/tmp", "/proc/self/environ", "/proc/self/cmdline", "/run", "/opt"):
        paths = [root] if os.path.isfile(root) else [
            os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for path in paths:
            try:
                with open(path, "rb") as f:
                    if needle in f.read(1 << 20):
                        found.append(path)
            except OSError:
                pass
    return {"found": found}


ACTIONS = {f.__name__: f for f in (net_connect, write_rootfs, mounts, host_paths, caps,
                                   raw_socket, use_token, read, listdir, read_loop, env,
                                   env_values, sleep, exit_silently, threads, fs_ops,
                                   write_stream, raw_call, descriptor, ticket_twice, fs_loop,
                                   hand_in, forged_write, fetch, proxy, tunnel_sni,
                                   secret_hunt)}
ACTIONS["pay"] = pay


def ops_frames(args):
    """Frames straight onto the ops socket: the token (``socket_token``, default this
    invocation's), then each base64 ``frames`` item as sent; every reply decoded, and
    whether the broker then ended the connection."""
    import base64
    import struct

    from writ_tool import _broker
    from writ_tool._proto import tool_pb2

    conn = _broker.connection()
    token = args.get("socket_token", conn.metadata[0][1]).encode()
    replies = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.path.join(os.path.dirname(conn.socket_path), _broker.OPS_SOCKET))
        s.settimeout(10)
        s.sendall(struct.pack(">I", len(token)) + token)
        for frame in args["frames"]:
            body = base64.b64decode(frame)
            s.sendall(struct.pack(">I", args.get("length", len(body))) + body)
            head = s.recv(4, socket.MSG_WAITALL)
            if len(head) < 4:
                return {"replies": replies, "closed": True}
            reply = tool_pb2.OpReply.FromString(
                s.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL))
            kind = reply.WhichOneof("result")
            replies.append([reply.id, kind, reply.error.code, reply.error.message]
                           if kind == "error" else [reply.id, kind])
        s.shutdown(socket.SHUT_WR)
        return {"replies": replies, "closed": s.recv(1) == b""}


ACTIONS["ops_frames"] = ops_frames


def main(args):
    if args.get("unary"):  # small operations as unary gRPC calls, not ops-socket frames
        from writ_tool import _broker

        _broker.connection()._ops_served = False
    if "pipe" in args:  # writes through a handed-in pipe (default) or in messages
        from writ_tool import files

        files.WRITE_VIA_PIPE = args["pipe"]
    return {"action": args["action"], "result": ACTIONS[args["action"]](args)}
