"""Model artifacts shared by training, prediction and monitoring (registry, tracking, scorer, metrics)."""
