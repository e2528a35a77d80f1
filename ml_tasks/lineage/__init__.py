"""Lineage: which data and which model produced a partition or a model version (see docs/lineage.md).

:func:`trace` walks a target down to the raw partitions, checking every hash on the way;
:func:`render_text` prints the result as a tree.
"""

from ml_tasks.lineage.graph import trace
from ml_tasks.lineage.nodes import LineageError
from ml_tasks.lineage.render import render_text

__all__ = ["LineageError", "render_text", "trace"]
