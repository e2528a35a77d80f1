"""The lineage as text: a summary line, the problems, then the chain as a tree (each node shown once)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ml_tasks.lineage.nodes import MISMATCH, MODEL, RANK, RUN, VERIFIED

MAX_PROBLEMS_SHOWN = 10


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short_sha(value: Any) -> str:
    return str(value)[:12] if value else "-"


def _label(node: dict[str, Any]) -> str:
    f, kind = node["facts"], node["kind"]
    if not node["exists"] or node["manifest"] is False:
        name = {MODEL: "model ", RUN: "run "}.get(kind, "")
        return f"{name}{node['id']}  [{'MISSING' if not node['exists'] else 'NO MANIFEST'}]"
    if kind == MODEL:
        aliases = "".join(f" @{a}" for a in f.get("aliases") or [])
        metrics = " ".join(f"{k}={v}" for k, v in sorted((f.get("metrics") or {}).items())[:3])
        bits = [
            f"model {node['id']}{aliases}",
            f"onnx {_short_sha(f.get('onnx_sha256'))}",
            f"service {f.get('feature_service')}",
            f"threshold {_num(f.get('threshold'))}",
            metrics,
            f"promotion {f['promotion']}" if f.get("promotion") else "",
        ]
    elif kind == RUN:
        bits = [
            f"run {f.get('run_id', node['id'])} (task {f.get('task_id')})",
            f"experiment {f.get('experiment')}",
            str(f.get("status")),
            f"dag {f.get('dag_id')} / {f.get('dag_run_id')}",
            f"code {f.get('code_version')}",
            f"started {f.get('start_time')}",
        ]
    else:
        bits = [node["id"], f"rows {f.get('rows')}" if "rows" in f else ""]
        if kind == "predictions":
            interval = f.get("interval") or {}
            model = f.get("model") or {}
            bits += [
                f"interval {interval.get('start')}..{interval.get('end')}",
                f"model {model.get('name')}/{model.get('version')}",
                f"threshold {_num(f.get('threshold'))}",
                f"missing features {f.get('missing_features')}",
            ]
        elif kind == "training_set":
            verdict = f.get("sha256_verdict")
            bits += [
                f"service {f.get('feature_service')}",
                f"label rate {_num(f.get('label_rate'))}",
                f"sha256 {_short_sha(f.get('sha256'))}" + (f" {verdict}" if verdict else ""),
            ]
        elif kind == "features":
            bits += [f"window days {f.get('window_days')}"]
        elif kind == "monitoring":
            bits += [f"verdict {f.get('verdict')}", f"drift share {_num(f.get('drift_share'))}",
                     f"retrain {f.get('retrain')}"]  # fmt: skip
        elif kind == "curated":
            bits += [f"raw {f.get('raw_rows')}", f"quarantined {f.get('quarantined')}"]
        elif kind == "raw":
            sources = f.get("sources") or [{}]
            extra = {
                k: v for k, v in sources[0].items() if k in ("seed", "trips_per_day", "path", "url", "table")
            }
            bits += [f"source {f.get('source')}"] + [f"{k} {v}" for k, v in extra.items()]
        if node["files"]:
            bits.append("files " + ", ".join(f"{n} {_short_sha(s)}" for n, s in node["files"].items()))
    mark = f"[{node['status']}]" if node["status"] else ""
    return "  ".join(b for b in [*bits, mark] if b)


def _ranges(ids: list[str]) -> str:
    """``curated/trips dt=2024-03-04..2024-03-06 (3)`` for ids of one dataset (consecutive days merged)."""
    groups: dict[str, list[str]] = {}
    for i in ids:
        base, _, key = i.rpartition("/")
        groups.setdefault(base or i, []).append(key)
    out = []
    for base, keys in groups.items():
        days = sorted(keys)
        parsed = [_day(k) for k in days]
        if all(d is not None for d in parsed):
            spans: list[list[dt.date]] = []
            for d in sorted(x for x in parsed if x is not None):
                if spans and d - spans[-1][-1] == dt.timedelta(days=1):
                    spans[-1].append(d)
                else:
                    spans.append([d])
            text = ", ".join(s[0].isoformat() if len(s) == 1 else f"{s[0]}..{s[-1]}" for s in spans)
            out.append(f"{base} dt={text} ({len(days)})")
        else:
            out.append(", ".join(f"{base}/{k}" for k in days))
    return "; ".join(out)


def _day(key: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(key.removeprefix("dt="))
    except ValueError:
        return None


def _owners(nodes: dict[str, dict[str, Any]], root: str) -> dict[str, str]:
    """For each node, the parent under which the tree shows it whole: its first parent in preorder."""
    owner: dict[str, str] = {}
    seen = {root}

    def visit(node_id: str) -> None:
        for child in nodes[node_id]["children"]:
            if child not in seen:
                seen.add(child)
                owner[child] = node_id
                visit(child)

    visit(root)
    return owner


def _dataset(node_id: str) -> str | None:
    """``<layer>/<dataset>`` of a daily partition id (``.../dt=YYYY-MM-DD``); None for anything else."""
    base, _, key = node_id.rpartition("/")
    return base if base and _day(key) is not None else None


def _group_label(members: list[dict[str, Any]]) -> str:
    """One line for several daily partitions of one dataset: days, rows, statuses (problems named)."""
    rows = [m["facts"].get("rows") for m in members]
    total = sum(r for r in rows if isinstance(r, int))
    bits = [_ranges([m["id"] for m in members]), f"rows {total}"]
    sources = sorted({str(m["facts"].get("source")) for m in members if m["facts"].get("source")})
    if sources:
        bits.append(f"source {', '.join(sources)}")
    bad = {
        "MISSING": [m for m in members if not m["exists"]],
        "NO MANIFEST": [m for m in members if m["exists"] and m["manifest"] is False],
        MISMATCH: [m for m in members if m["exists"] and m["status"] == MISMATCH],
    }
    verified = sum(1 for m in members if m["status"] == VERIFIED)
    marks = [f"{verified} {VERIFIED}"] if verified else []
    marks += [f"{what}: {_ranges([m['id'] for m in found])}" for what, found in bad.items() if found]
    return "  ".join([*bits, f"[{'; '.join(marks)}]"])


def render_text(trace: dict[str, Any], *, expand: bool = False, group_min: int = 4) -> str:
    """An indented tree a human reads in seconds: a summary line and the problems first, then the chain.

    Each node is shown once (later references are collapsed into one "(shown above)" line). Sibling daily
    partitions of one dataset (the 28 curated days of a training window) are folded into one line with
    their day ranges, total rows and statuses when there are at least ``group_min`` of them, unless
    ``expand``; the JSON form always has every node, its facts and file hashes.
    """
    nodes: dict[str, dict[str, Any]] = trace["nodes"]
    s = trace["summary"]
    kinds = ", ".join(f"{n} {k}" for k, n in s["by_kind"].items())
    verdict = (
        "all links verified"
        if s["ok"]
        else f"{len(s['mismatches'])} MISMATCH, {len(s['missing'])} missing, {len(s['problems'])} problem(s)"
    )
    lines = [f"lineage of {trace['target']['input']}: {s['nodes']} nodes ({kinds}); {verdict}"]
    if s["problems"]:
        lines += [f"  ! {p}" for p in s["problems"][:MAX_PROBLEMS_SHOWN]]
        if len(s["problems"]) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ! ... {len(s['problems']) - MAX_PROBLEMS_SHOWN} more (see the JSON output)")
    owner = _owners(nodes, trace["root"])

    def items_of(children: list[str]) -> list[list[str]]:
        """Children as display items: single nodes, or groups of daily partitions of one dataset."""
        groups: dict[str, list[str]] = {}
        for child in children:
            groups.setdefault(_dataset(child) or child, []).append(child)
        out: list[list[str]] = []
        for members in groups.values():
            if expand or len(members) < group_min:
                out += [[m] for m in members]
            else:
                out.append(members)
        return out

    def walk(members: list[str], prefix: str, connector: str) -> None:
        label = _label(nodes[members[0]]) if len(members) == 1 else _group_label([nodes[m] for m in members])
        lines.append(f"{prefix}{connector}{label}")
        child_prefix = "" if not connector else prefix + ("    " if connector == "└── " else "│   ")
        mine = set(members)
        fresh: list[str] = []
        refs: list[str] = []
        for member in members:
            for c in nodes[member]["children"]:
                target = fresh if owner.get(c) in mine else refs
                if c not in fresh and c not in refs and c not in mine:
                    target.append(c)
        fresh.sort(key=lambda c: (RANK.get(nodes[c]["kind"], 99), c))
        items: list[list[str] | None] = [*items_of(fresh), *([None] if refs else [])]
        for i, item in enumerate(items):
            conn = "└── " if i == len(items) - 1 else "├── "
            if item is None:
                lines.append(f"{child_prefix}{conn}(shown above) {_ranges(sorted(refs))}")
            else:
                walk(item, child_prefix, conn)

    walk([trace["root"]], "", "")
    return "\n".join(lines) + "\n"
