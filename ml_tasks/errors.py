"""The root of every expected error: ``ml-tasks`` reports a :class:`FlywheelError` as one line, exit 1."""


class FlywheelError(Exception):
    """An expected failure of a step (bad input, a missing partition, a failed gate): names what and why."""
