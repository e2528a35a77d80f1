"""The pipeline's Assets, shared by the DAGs that produce and consume them.

One object per Asset, defined once: a producer's ``outlets`` and a consumer's ``schedule`` must name the
same (name, uri), or the consumer silently never runs.

Event contract: every event of these Assets is emitted by :class:`_lib.local.MlStepOperator` (or
:class:`_lib.pod.MlStepPodOperator`) and its
``extra`` says which data changed (see ``MlStepOperator.event_extra``)::

    {"step": "publish", "interval": {"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"},  # local days, end exclusive
     "partitions": [{"dt": "YYYY-MM-DD", "uri": "...", "rows": 123}, ...], "run_id": "<producer run>"}

A producer run that publishes several intervals in one event (taxi_batch_predict's ``publish``) puts
``"intervals": [{"start", "end"}, ...]`` instead of ``"interval"``.

Consumers read the interval(s) from the extra (:func:`_lib.intervals.plan_intervals`), never the URI: the URI
names the dataset, not a partition.
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
