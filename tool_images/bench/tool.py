"""bench: "noop" returns at once; "read_loop" times n mediated ReadFile (or, with
"op": "stat", Stat) calls from inside;
"files" times whole-file reads (descriptor and gRPC stream) and a streamed write, in turns
with the same bytes over a raw Unix socket (the floors); "net" times mediated GETs."""

import os
import socket
import time

from writ_tool import files

BLOCK = 1 << 20
WARMUP = 2


def _read_descriptor(path):
    buf = bytearray(BLOCK)
    total = 0
    with files.open(path, "rb") as f:
        while n := f.readinto(buf):
            total += n
    return total


def _read_stream(path):
    return sum(len(chunk) for chunk in files._chunks(path, "", 0, 0))


def _write_stream(path, size):
    block = bytes(range(256)) * (BLOCK // 256)
    with files.open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(block)
    return f.bytes_written


def _raw_read(sock_path, size):
    """The floor: the same bytes sent by the host over a plain Unix socket."""
    buf = bytearray(BLOCK)
    total = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        while total < size and (n := s.recv_into(buf)):
            total += n
    return total


def _raw_write(sock_path, size):
    """The floor: the bytes sent to the host, which writes them to disk, fsyncs and acks."""
    block = bytes(range(256)) * (BLOCK // 256)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        for _ in range(size // BLOCK):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"k":
            raise RuntimeError("the floor's host side did not acknowledge")
    return size


def _timed(fn, *args):
    os.sync()  # no dirty pages left from the last run to throttle this one
    t0 = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - t0


def _files(args):
    """Writ and its floors in turns, round after round, so both meet the same machine."""
    raw = args["raw_dir"]
    deadline = time.monotonic() + 30
    while not os.path.exists(f"{raw}/write.sock"):  # the bench binds them after we start
        if time.monotonic() > deadline:
            raise RuntimeError("the floor's sockets never appeared")
        time.sleep(0.01)
    size = args["size"]
    reads = (("descriptor", _read_descriptor, (args["path"],)),
             ("stream", _read_stream, (args["path"],)),
             ("raw_read", _raw_read, (f"{raw}/read.sock", size)))
    writes = (("write", _write_stream, (args["out"], size)),
              ("raw_write", _raw_write, (f"{raw}/write.sock", size)))
    out = {key: [] for key, _, _ in reads + writes}
    # Reads, then writes, each with two untimed rounds first and every other round in
    # reverse. Why so careful: this VM reports freed memory to its host (virtio-balloon
    # free page reporting), so page cache written a second or more after the last big
    # free faults in slowly, and an atomic replace frees the old file only at its end.
    # Writes back to back, in alternating order, meet the same warm memory on both sides.
    for steps in (reads, writes):
        for i in range(-WARMUP, int(args.get("reps", 3))):
            for key, fn, fargs in steps if i % 2 == 0 else steps[::-1]:
                n, seconds = _timed(fn, *fargs)
                assert n == size, (key, n)
                if i >= 0:
                    out[key].append(seconds)
    return out


def _net(args):
    """Mediated GETs timed inside the box: through writ_tool.net and, for the small body,
    through the forwarder with plain urllib (an unmodified client)."""
    import urllib.request

    from writ_tool import net

    def sdk(url):
        return len(net.fetch(url).content)

    def proxied(url):
        with urllib.request.urlopen(url, timeout=60) as r:
            return len(r.read())

    out = {}
    for key, fn, url, n in (("sdk_small", sdk, args["small"], args["n_small"]),
                            ("proxy_small", proxied, args["small"], args["n_small"]),
                            ("sdk_big", sdk, args["big"], args["n_big"])):
        times = []
        for i in range(-WARMUP, n):
            t0 = time.perf_counter()
            size = fn(url)
            if i >= 0:
                times.append(time.perf_counter() - t0)
        out[key] = times
        out[key + "_bytes"] = size
    return out


def main(args):
    if args.get("action") == "read_loop":
        op = files.stat if args.get("op") == "stat" else files.read_bytes
        lat = []
        for _ in range(int(args.get("n", 1000))):
            t0 = time.perf_counter_ns()
            op(args["path"])
            lat.append(time.perf_counter_ns() - t0)
        return {"latencies_ns": lat}
    if args.get("action") == "files":
        return _files(args)
    if args.get("action") == "net":
        return _net(args)
    return {}
