"""Shared pieces of the benchmark sections: a row type, percentiles, the table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure and the floor it is compared with, both from this run."""

    name: str            # what Writ did
    unit: str            # "ms", "µs", "MB/s", "ops/s"
    p50: float
    p99: float | None
    floor_name: str      # the same work without Writ
    floor_p50: float
    floor_p99: float | None
    higher_is_better: bool = False
    target: str = ""     # e.g. "ratio <= 1.2"; checked by the section, shown here
    met: bool | None = None

    @property
    def ratio(self) -> float:
        return self.p50 / self.floor_p50 if self.floor_p50 else float("inf")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def table(figures: Sequence[Figure]) -> str:
    head = (f"{'figure':<44} {'unit':<5} {'p50':>10} {'p99':>10}   {'floor (same run)':<36} "
            f"{'p50':>10} {'p99':>10} {'ratio':>7}  target")
    lines = [head, "-" * len(head)]
    for f in figures:
        verdict = "" if f.met is None else (" met" if f.met else " MISSED")
        lines.append(f"{f.name:<44} {f.unit:<5} {_n(f.p50):>10} {_n(f.p99):>10}   "
                     f"{f.floor_name:<36} {_n(f.floor_p50):>10} {_n(f.floor_p99):>10} "
                     f"{f.ratio:>6.2f}x  {f.target}{verdict}")
    return "\n".join(lines)
