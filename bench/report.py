"""Rows of samples → the printed table, the ratios, the targets, and the JSON file."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    id: str
    section: str
    label: str
    n: int | None
    unit: str  # s | Gbit/s | conn/s | MiB
    samples: list[float] = field(default_factory=list)
    note: str = ""
    failures: int = 0  # runs that failed or timed out (not in samples)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def add(self, value: float) -> None:
        self.samples.append(value)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        if value < 1:
            return f"{value * 1000:.0f} ms" if value >= 0.01 else f"{value * 1000:.1f} ms"
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "Gbit/s":
        return f"{value:.2f} Gbit/s"
    if unit == "conn/s":
        return f"{value:.0f} conn/s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.3g} {unit}"


def spread(row: Row) -> str:
    if not row.samples:
        return "—"
    lo, hi = min(row.samples), max(row.samples)
    a, b = fmt(lo, row.unit), fmt(hi, row.unit)
    unit_a, unit_b = a.split(" ", 1)[1], b.split(" ", 1)[1]
    return f"{a.split(' ', 1)[0]}–{b}" if unit_a == unit_b else f"{a}–{b}"


@dataclass
class Ratio:
    label: str
    value: float | None
    target: str = ""  # e.g. "≤ 1.5×"
    met: bool | None = None
    percent: bool = False
    verdict: str = ""  # in place of MET / NOT MET (AT FLOOR: not met where a floor measured in the same run forbids it)

    def text(self) -> str:
        if self.value is None:
            v = "—"
        elif self.percent or "%" in self.target:
            v = f"{self.value * 100:.0f}%"
        else:
            v = f"{self.value:.2f}×"
        if not self.target:
            return f"  {self.label:<64} {v:>9}"
        verdict = self.verdict or ("n/a" if self.met is None else ("MET" if self.met else "NOT MET"))
        return f"  {self.label:<64} {v:>9}   target {self.target:<8} {verdict}"


def table(rows: list[Row]) -> str:
    out = []
    header = f"  {'measurement':<52} {'N':>6}  {'median':>12}  {'min–max':<22} {'runs':>4}"
    section = None
    order = {s: i for i, s in enumerate(sorted({r.section for r in rows}))}
    for r in sorted(rows, key=lambda r: order[r.section]):  # stable: runs keep their order
        if r.section != section:
            section = r.section
            out.append("")
            out.append(section)
            out.append(header)
        runs = f"{len(r.samples)}" + (f"+{r.failures}✗" if r.failures else "")
        n = "" if r.n is None else str(r.n)
        line = f"  {r.label:<52} {n:>6}  {fmt(r.median, r.unit):>12}  {spread(r):<22} {runs:>4}"
        if r.note:
            line += f"  {r.note}"
        out.append(line)
    return "\n".join(out)


def save(path: Path, env: dict, rows: list[Row], ratios: list[Ratio], notes: list[str], extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "env": env,
        "rows": [asdict(r) | {"median": r.median, "min": min(r.samples) if r.samples else None, "max": max(r.samples) if r.samples else None} for r in rows],
        "ratios": [asdict(r) for r in ratios],
        "notes": notes,
        **extra,
    }
    path.write_text(json.dumps(data, indent=1) + "\n")
