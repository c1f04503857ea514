"""bench: "noop" returns at once; "read_loop" times n mediated ReadFile (or, with
"op": "stat", Stat) calls from inside;
"files" times whole-file reads (descriptor and gRPC stream) and a streamed write."""

import os
import time

from writ_tool import files

BLOCK = 1 << 20


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


def _timed(fn, *args):
    os.sync()  # no dirty pages left from the last run to throttle this one (floors do too)
    t0 = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - t0


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
        out = {"descriptor": [], "stream": [], "write": []}
        # One untimed round first: on a VM, memory the guest never touched is slow to
        # fault in, and the floors get the same warm-up.
        for i in range(int(args.get("reps", 3)) + 1):
            for key, fn, fargs in (("descriptor", _read_descriptor, (args["path"],)),
                                   ("stream", _read_stream, (args["path"],)),
                                   ("write", _write_stream, (args["out"], args["size"]))):
                n, seconds = _timed(fn, *fargs)
                assert n == args["size"], (key, n)
                if i:
                    out[key].append(seconds)
        return out
    return {}
