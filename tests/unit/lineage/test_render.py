"""The text tree: each node once, references back, sibling days folded into one line."""

from __future__ import annotations

import shutil

from ml_tasks.lineage import render_text, trace
from ml_tasks.storage import DataRoot
from tests.unit.lineage._tree import DAYS, SERVICE, TS_KEY, settings_for


def test_text_tree_shows_each_node_once_and_refers_back(root: DataRoot) -> None:
    text = render_text(trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}"))
    lines = text.splitlines()
    assert lines[0].startswith(f"lineage of training_sets/{SERVICE}/{TS_KEY}: 9 nodes")
    assert "all links verified" in lines[0]
    assert lines[1].startswith(f"training_sets/{SERVICE}/{TS_KEY}  rows 69")
    # every node is expanded exactly once
    for node in (
        "curated/trips/dt=2024-03-04",
        "raw/trips/dt=2024-03-05",
        "features/company_stats/dt=2024-03-05",
    ):
        assert sum(1 for line in lines if line.lstrip("│ ├└─").startswith(node + " ")) == 1, node
    # the training set's own curated inputs were shown under the feature partitions: one grouped reference
    assert lines[-1] == "└── (shown above) curated/trips dt=2024-03-04..2024-03-05 (2)"
    assert all("[verified]" in line for line in lines[1:] if "(shown above)" not in line)


def test_text_folds_sibling_days_into_one_line_and_names_the_bad_ones(root: DataRoot) -> None:
    shutil.rmtree(root.partition_path("raw", "trips", DAYS[0]))
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    lines = render_text(result, group_min=2).splitlines()
    assert lines[0].endswith("0 MISMATCH, 1 missing, 1 problem(s)")
    assert lines[1].startswith("  ! raw/trips/dt=2024-03-04: partition ") and "does not exist" in lines[1]
    tree = [line.split("  rows")[0] for line in lines[2:]]
    assert tree == [
        f"training_sets/{SERVICE}/{TS_KEY}",
        "├── features/company_stats dt=2024-03-04..2024-03-05 (2)",
        "│   └── curated/trips dt=2024-03-04..2024-03-05 (2)",
        "│       └── raw/trips dt=2024-03-04..2024-03-05 (2)",
        "├── features/pickup_area_stats dt=2024-03-04..2024-03-05 (2)",
        "│   └── (shown above) curated/trips dt=2024-03-04..2024-03-05 (2)",
        "└── (shown above) curated/trips dt=2024-03-04..2024-03-05 (2)",
    ]
    assert lines[5].endswith("rows 40  source synthetic  [1 verified; MISSING: raw/trips dt=2024-03-04 (1)]")
    assert lines[4].endswith("rows 68  [2 verified]")  # 29 + 39 curated rows
    # expand=True shows every node on its own line
    expanded = render_text(result, expand=True, group_min=2)
    assert expanded == render_text(result)
    assert "raw/trips/dt=2024-03-04  [MISSING]" in expanded
