"""The scaffold's command line: validate the name, the shape and the steps, then write the three files."""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

from scripts.new_dag.render import SHAPES, ScaffoldError, Spec, write

REPO = Path(__file__).resolve().parents[2]
NAME = re.compile(r"^[a-z][a-z0-9_]{2,62}$")


def known_steps() -> set[str]:
    """The ``ml-tasks`` subcommands (the CLI's own registry)."""
    import typer.main

    from ml_tasks.cli import app  # the package registers every subcommand

    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))  # a group of subcommands (typer vendors its own click)


def known_assets(repo: Path) -> set[str]:
    """The Asset constants of ``dags/_lib/assets.py`` (read, not imported: no Airflow import here)."""
    tree = ast.parse((repo / "dags" / "_lib" / "assets.py").read_text())
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", None) == "Asset"
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(
        prog="python -m scripts.new_dag",
        description="Write a new DAG of Flywheel steps, its test and a docs stub.",
        epilog='example: python -m scripts.new_dag trip_counts --shape interval --step "extract --source '
        'synthetic" --step transform',
    )
    out.add_argument("name", help="dag_id and file stem (lower_snake_case)")
    out.add_argument(
        "--shape",
        choices=SHAPES,
        default="interval",
        help="interval: daily schedule, steps in a chain; asset: on an Asset, steps mapped over its"
        " intervals; fanout: on an Asset, the first step mapped, the last run once over the whole span",
    )
    out.add_argument(
        "--step",
        action="append",
        required=True,
        metavar="'STEP [ARGS...]'",
        help="an ml-tasks step and its arguments after --start/--end (repeat, in order)",
    )
    out.add_argument("--asset", default="CURATED_TRIPS", help="asset/fanout: an Asset of dags/_lib/assets.py")
    out.add_argument("--summary", default=None, help="one line: what the DAG does (description, doc_md)")
    out.add_argument("--repo", type=Path, default=REPO, help="the repository to write into")
    out.add_argument("--force", action="store_true", help="overwrite existing files")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if not NAME.match(args.name):
            raise ScaffoldError(f"name {args.name!r}: use lower_snake_case, 3-63 characters, a letter first")
        steps = [shlex.split(s) for s in args.step]
        known = known_steps()
        for step in steps:
            if not step or step[0] not in known:
                raise ScaffoldError(
                    f"--step {shlex.join(step)!r}: not an ml-tasks step ({', '.join(sorted(known))})"
                )
        if len({s[0] for s in steps}) != len(steps):
            raise ScaffoldError("--step: each step once (the step name is the task id)")
        assets = known_assets(args.repo)
        if args.shape != "interval" and args.asset not in assets:
            raise ScaffoldError(
                f"--asset {args.asset!r}: not an Asset of dags/_lib/assets.py ({', '.join(sorted(assets))})"
            )
        if args.shape == "fanout" and len(steps) != 2:
            raise ScaffoldError("--shape fanout: give two --step, the mapped step and the commit step")
        summary = args.summary or f"{' -> '.join(s[0] for s in steps)} ({args.shape})"
        spec = Spec(args.name, args.shape, [(s[0], s[1:]) for s in steps], args.asset, summary)
        for path in write(spec, args.repo.resolve(), force=args.force):
            print(f"wrote {path.relative_to(args.repo.resolve())}")
    except ScaffoldError as exc:
        print(f"new_dag: error: {exc}")
        return 1
    return 0
