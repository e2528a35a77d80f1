"""``python -m ml_tasks.cli``: the same entry point as the ``ml-tasks`` script."""

from ml_tasks.cli import entry

entry()
