"""The pipeline's Assets, shared by the DAGs that produce and consume them.

Defined once: a producer's ``outlets`` and a consumer's ``schedule`` must name the same (name, uri), or the
consumer silently never runs. Consumers read the interval(s) from the event's extra, never the URI
(event contract: ``docs/dags.md``).
"""

from __future__ import annotations

from airflow.sdk import Asset

#: curated trips (taxi_ingest's publish), one event per published interval
CURATED_TRIPS = Asset(name="flywheel-curated-trips", uri="flywheel://curated/trips", group="flywheel")
#: offline feature tables materialized into the online store (taxi_features), one event per interval
FEATURES = Asset(name="flywheel-features", uri="flywheel://features", group="flywheel")
#: a new champion model version (taxi_training's promotion), extra: {"model", "version", "run_id", ...}
CHAMPION_MODEL = Asset(name="flywheel-champion-model", uri="flywheel://models/champion", group="flywheel")
#: batch predictions committed by taxi_batch_predict: ONE event per run once every interval is committed,
#: extra: {"step": "predict-commit", "intervals": [...], "partitions", "models", "run_id"}
PREDICTIONS = Asset(name="flywheel-predictions", uri="flywheel://predictions", group="flywheel")
#: a retraining request of taxi_monitoring: a drift verdict that passed hysteresis and cooldown, extra:
#: {"step": "monitor", "interval", "decision", "model", "version", "run_id"}; taxi_training runs on it
DRIFT = Asset(name="flywheel-drift", uri="flywheel://monitoring/drift", group="flywheel")
