"""Feature store: trailing-window entity features, Feast materialization and point-in-time training sets."""
