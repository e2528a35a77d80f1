"""Merge the benchmark parts into ``bench/results/latest.json`` and print them as one markdown table.

Every ``bench/*.py`` script writes ``bench/results/parts/<bench>.json`` through ``bench._results.emit``;
``make bench`` runs them all, then this script. A missing part is named, not fatal (the table shows what
exists); the exit code is 1 when a figure is above its regression bound. ``--readme`` also rewrites the
README's table between the two marker comments.

Usage: python bench/report.py [--parts DIR] [--out bench/results/latest.json] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._results

from bench._results import PARTS, RESULTS, Figure, machine

#: the benches ``make bench`` runs, in table order (the bench name each script passes to ``emit``)
EXPECTED = (
    "dag_parse",
    "startup",
    "etl",
    "feature_materialize",
    "feature_training_set",
    "train",
    "predict",
    "monitor",
    "demo",
)
README_START = "<!-- bench-table:start -->"
README_END = "<!-- bench-table:end -->"
COLUMNS = (
    "bench",
    "figure",
    "value",
    "unit",
    "floor",
    "ratio",
    "goal",
    "bound",
    "rows",
    "peak RSS MiB",
    "status",
)


def load_parts(parts_dir: Path) -> dict[str, dict[str, Any]]:
    """The part files by bench name, in :data:`EXPECTED` order then any others by name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(parts_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            bench = str(record["bench"])
            [Figure(**f) for f in record["figures"]]  # a part must hold valid figures
        except (ValueError, KeyError, TypeError) as exc:
            print(f"bench/report: skipping unreadable part {path}: {exc}", file=sys.stderr)
            continue
        found[bench] = record
    order = [b for b in EXPECTED if b in found] + sorted(set(found) - set(EXPECTED))
    return {b: found[b] for b in order}


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def status(fig: Figure) -> str:
    """``FAIL`` above the regression bound, ``over goal`` above the goal, else empty."""
    if fig.over_bound:
        return "FAIL (over bound)"
    if fig.goal is not None and fig.checked > fig.goal:
        return "over goal"
    return ""


def table(parts: dict[str, dict[str, Any]], missing: list[str]) -> str:
    """The markdown table (with its date and machine line) of every figure of every part."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for bench, record in parts.items():
        for raw in record["figures"]:
            fig = Figure(**raw)
            cells = [
                bench,
                fig.name,
                _num(fig.value),
                fig.unit,
                _num(fig.floor),
                _num(fig.ratio),
                _num(fig.goal),
                _num(fig.bound),
                _num(fig.rows),
                _num(fig.peak_rss_mib and round(fig.peak_rss_mib)),
                status(fig),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    head = header(parts)
    tail = [f"Missing parts (not run or failed): {', '.join(missing)}."] if missing else []
    return "\n".join([head, "", *lines, *(["", *tail] if tail else [])]) + "\n"


def newest_machine(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The machine record of the newest part (this machine, now, when there is none)."""
    machines: list[dict[str, Any]] = [r["machine"] for r in parts.values()] or [machine()]
    return max(machines, key=lambda m: str(m.get("date", "")))


def header(parts: dict[str, dict[str, Any]]) -> str:
    """Date and machine of the run (the newest part's date; each part records its own)."""
    newest = newest_machine(parts)
    oldest = min(str(r["machine"].get("date", "")) for r in parts.values()) if parts else newest["date"]
    dates = newest["date"] if oldest == newest["date"] else f"{oldest} .. {newest['date']}"
    return (
        f"Measured {dates} on {newest.get('cores')} cores, {newest.get('cpu_model')},"
        f" Python {newest.get('python')} (`make bench`; ratio = times worse than the floor)."
    )


def merge(parts: dict[str, dict[str, Any]], missing: list[str]) -> dict[str, Any]:
    """``latest.json``: the machine, every figure with its bench, the missing benches."""
    figures = [{"bench": b, **f} for b, r in parts.items() for f in r["figures"]]
    return {
        "machine": newest_machine(parts),
        "benches": {b: r["machine"] for b, r in parts.items()},
        "missing": missing,
        "figures": figures,
    }


def rewrite_readme(readme: Path, text: str) -> None:
    """Replace what lies between the README's two marker comments with ``text``."""
    content = readme.read_text()
    start, end = content.find(README_START), content.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"bench/report: {readme} has no {README_START} ... {README_END} markers")
    before = content[: start + len(README_START)]
    readme.write_text(before + "\n" + text + content[end:])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", type=Path, default=PARTS, help="folder of the part files")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="merged JSON")
    parser.add_argument("--readme", type=Path, help="also rewrite this README's table between the markers")
    args = parser.parse_args()

    parts = load_parts(args.parts)
    missing = [b for b in EXPECTED if b not in parts]
    merged = merge(parts, missing)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=2) + "\n")
    text = table(parts, missing)
    print(text, end="")
    if args.readme:
        rewrite_readme(args.readme, text)
    if missing:
        print(f"bench/report: missing parts: {', '.join(missing)} (in {args.parts})", file=sys.stderr)
    failed = [f"{f['bench']} {f['name']}" for f in merged["figures"] if Figure(**_fields(f)).over_bound]
    if failed:
        print(f"bench/report: above their regression bound: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != "bench"}


if __name__ == "__main__":
    sys.exit(main())
