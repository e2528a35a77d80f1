"""Request-time features: computed from the trip itself, by one function for training and prediction.

``transform`` stores them in the curated trips, ``training-set`` and ``predict`` recompute them from
the same raw columns with this function, so a model never sees two definitions of "fare per mile".
Pure pyarrow, vectorised; nulls propagate (unknown stays unknown).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

#: raw trip columns the request-time features are computed from
REQUEST_INPUTS: tuple[str, ...] = ("trip_start_timestamp", "trip_seconds", "trip_miles", "fare")

#: request-time feature -> arrow type (what the model receives besides the Feast features)
REQUEST_FEATURES: dict[str, pa.DataType] = {
    "trip_start_hour": pa.int8(),  # local hour 0-23
    "trip_start_day_of_week": pa.int8(),  # ISO: 1 = Monday ... 7 = Sunday
    "trip_start_month": pa.int8(),
    "fare_per_mile": pa.float64(),  # null when miles is 0 or unknown
    "speed_mph": pa.float64(),  # null when seconds is 0 or unknown
}


def request_time_features(trips: pa.Table) -> dict[str, pa.ChunkedArray]:
    """The request-time features of ``trips`` (columns :data:`REQUEST_INPUTS`), by name, row-aligned.

    ``trip_start_timestamp`` is the trip's local (floating) wall-clock time, as in the raw schema.
    """
    missing = [c for c in REQUEST_INPUTS if c not in trips.column_names]
    if missing:
        raise ValueError(f"request_time_features: the trips have no column(s) {missing}")
    start = trips["trip_start_timestamp"]
    seconds = trips["trip_seconds"]
    miles = trips["trip_miles"]
    fare = trips["fare"]
    hours = pc.divide(pc.cast(seconds, pa.float64()), 3600.0)
    values = {
        "trip_start_hour": pc.hour(start),
        "trip_start_day_of_week": pc.day_of_week(start, count_from_zero=False, week_start=1),
        "trip_start_month": pc.month(start),
        # if_else keeps null where the condition is null (miles or seconds unknown) or false
        "fare_per_mile": pc.if_else(pc.greater(miles, 0.0), pc.divide(fare, miles), None),
        "speed_mph": pc.if_else(pc.greater(seconds, 0), pc.divide(miles, hours), None),
    }
    return {name: pc.cast(values[name], typ) for name, typ in REQUEST_FEATURES.items()}
