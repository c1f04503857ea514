"""Run every benchmark section, print one table and write bench-results.json.

    python -m writ.bench [--json] [--only SECTION ...]

Each section module exposes ``run(quick: bool) -> list[Figure]`` and measures its own
floors in the same run. Targets are reported, never asserted: the machine is noisy.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from ._common import table

# One line per section; a section is a module in this package.
SECTIONS = ["invoke", "decision", "files", "audit", "agents", "net"]


def main() -> int:
    p = argparse.ArgumentParser(prog="writ-bench")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.add_argument("--only", nargs="*", default=None, help=f"sections: {SECTIONS}")
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("WRIT_BENCH_QUICK") == "1", help="fewer samples")
    p.add_argument("--out", default="bench-results.json")
    args = p.parse_args()
    figures = []
    for name in args.only or SECTIONS:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"writ.bench.{name}")
        figures += module.run(args.quick)
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cpus": os.cpu_count(), "figures": [f.as_json() for f in figures]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else table(figures))
    print(f"\n(written to {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
