"""bench: "noop" returns at once; "read_loop" times n mediated ReadFile calls from inside."""

import time

from writ_tool import files


def main(args):
    if args.get("action") == "read_loop":
        lat = []
        for _ in range(int(args.get("n", 1000))):
            t0 = time.perf_counter_ns()
            files.read_bytes(args["path"])
            lat.append(time.perf_counter_ns() - t0)
        return {"latencies_ns": lat}
    return {}
