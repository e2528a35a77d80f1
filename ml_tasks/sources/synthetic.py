"""Synthetic Chicago taxi trips: deterministic, calibrated on real samples, with dirty rows and drift.

The default source of the demo and the benchmarks: rows typed in :data:`RAW_SCHEMA`, built from numpy
arrays (about a million rows a second). Day D is a pure function of ``(seed, D, trips_per_day,
dirty_rate, drift_from)`` and :data:`GENERATOR_VERSION`. Calibration, dirty rows and the drift scenario:
:mod:`ml_tasks.sources.synthetic_calibration` and docs/synthetic-source.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from collections.abc import Iterator
from typing import Any, Self

import numpy as np
import pyarrow as pa

from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.sources import synthetic_calibration as cal
from ml_tasks.sources._options import check_known, opt_float, opt_int
from ml_tasks.sources.base import SourceBatch, SourceError
from ml_tasks.sources.synthetic_calibration import I64, Bool, ScenarioTables
from ml_tasks.sources.synthetic_ids import hex_ids

log = logging.getLogger(__name__)

GENERATOR_VERSION = "v1"
SOURCE_TAG = f"synthetic:{GENERATOR_VERSION}"
DEFAULT_SEED = 0
DEFAULT_DIRTY_RATE = 0.005
# Rows per generated chunk: bounds memory, and is part of the output's definition (each chunk has
# its own random stream), so changing it changes the data: bump GENERATOR_VERSION with it.
CHUNK_ROWS = 262_144
MAX_TRIPS_PER_DAY = 10_000_000
MAX_DIRTY_RATE = 0.5
OPTION_NAMES = ("seed", "dirty_rate", "trips_per_day", "drift_from")

_US = 1_000_000
_QUARTER_US = 900 * _US
_DAY_US = 86_400 * _US
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


class SyntheticSource:
    """Deterministic, calibrated synthetic trips (see the module docstring).

    Args:
        trips_per_day: mean trips per day before day-of-week variation (0 gives empty days).
        seed: global seed; the date is mixed in, so each day has its own stream.
        dirty_rate: share of rows made dirty, split equally over :data:`cal.DIRTY_KINDS`.
        drift_from: first day of the drift scenario, or None for no drift ever.
    """

    def __init__(
        self,
        *,
        trips_per_day: int = 20_000,
        seed: int = DEFAULT_SEED,
        dirty_rate: float = DEFAULT_DIRTY_RATE,
        drift_from: dt.date | None = None,
    ) -> None:
        if not 0 <= trips_per_day <= MAX_TRIPS_PER_DAY:
            raise SourceError(
                f"synthetic: trips_per_day={trips_per_day} must be within 0..{MAX_TRIPS_PER_DAY}"
            )
        if not 0 <= seed < 2**32:
            raise SourceError(f"synthetic: seed={seed} must be within 0..{2**32 - 1}")
        if not (0.0 <= dirty_rate <= MAX_DIRTY_RATE) or math.isnan(dirty_rate):
            raise SourceError(f"synthetic: dirty_rate={dirty_rate} must be within 0..{MAX_DIRTY_RATE}")
        self.name = "synthetic"
        self.server_side_filter = True
        self.trips_per_day = trips_per_day
        self.seed = seed
        self.dirty_rate = dirty_rate
        self.drift_from = drift_from
        self._taxi_ids = self._taxi_pool()
        self._base = cal.scenario_tables(drifted=False)
        self._drifted = cal.scenario_tables(drifted=True)
        self._distances = cal.area_distances()
        self._pickup_lut = cal.lut(np.asarray(cal.PICKUP_COUNTS, dtype=np.float64))
        self._dropoff_luts = cal.dropoff_luts(self._distances)
        self._preset_lut = cal.lut(np.asarray([w for _, w in cal.PRESETS]))
        self._extras_lut = cal.lut(np.asarray([w for _, w in cal.EXTRAS]))
        self._outside = np.full(77, cal.DROPOFF_OUTSIDE_DEFAULT)
        for area, share in cal.DROPOFF_OUTSIDE.items():
            self._outside[area - 1] = share
        self._tract = cal.tract_tables()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_options(cls, settings: Settings, options: dict[str, Any]) -> Self:
        """Build from settings, overridden by CLI ``--option key=value`` strings.

        Raises:
            SourceError: an unknown option or a value that does not parse / is out of range.
        """
        check_known(options, "synthetic", set(OPTION_NAMES))
        drift_text = options.get("drift_from", settings.synthetic_drift_from)
        drift_from: dt.date | None = None
        if isinstance(drift_text, dt.date):
            drift_from = drift_text
        elif drift_text is not None and str(drift_text).strip():
            try:
                drift_from = dt.date.fromisoformat(str(drift_text).strip())
            except ValueError:
                raise SourceError(
                    f"synthetic source: drift_from={drift_text!r} is not an ISO date (YYYY-MM-DD)"
                ) from None
        return cls(
            trips_per_day=opt_int(options, "trips_per_day", settings.synthetic_trips_per_day),
            seed=opt_int(options, "seed", DEFAULT_SEED),
            dirty_rate=opt_float(options, "dirty_rate", DEFAULT_DIRTY_RATE),
            drift_from=drift_from,
        )

    def _taxi_pool(self) -> pa.Array:
        """128-hex medallion ids of this seed (hashlib is fine: a few thousand, built once)."""
        n = cal.TAXI_POOL + cal.TAXI_POOL  # base companies, then the drift scenario's new ones
        return pa.array(
            [hashlib.sha512(f"flywheel-taxi:{self.seed}:{k}".encode()).hexdigest() for k in range(n)],
            pa.string(),
        )

    # -- the Source protocol --------------------------------------------------------------------
    def drifted(self, day: dt.date) -> bool:
        """Whether ``day`` is under the drift scenario."""
        return self.drift_from is not None and day >= self.drift_from

    def day_volume(self, day: dt.date) -> int:
        """Rows generated for ``day`` (day-of-week factor and deterministic day noise included)."""
        if self.trips_per_day == 0:
            return 0
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, day.toordinal(), 0])))
        factor = cal.WEEKDAY_FACTORS[day.weekday()] * math.exp(rng.normal(0.0, cal.DAY_NOISE_SIGMA))
        return max(1, round(self.trips_per_day * factor))

    def read(self, interval: Interval) -> Iterator[SourceBatch]:
        """Yield each day's rows in chunks of at most :data:`CHUNK_ROWS`, sorted by start time."""
        for day in interval.days():
            yield from self._read_day(day)

    def describe(self, interval: Interval) -> dict[str, Any]:
        """The manifest input entry: everything the rows are a function of."""
        return {
            "source": "synthetic",
            "generator_version": GENERATOR_VERSION,
            "seed": self.seed,
            "trips_per_day": self.trips_per_day,
            "drift_from": self.drift_from.isoformat() if self.drift_from else None,
            "dirty_rate": self.dirty_rate,
            "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        }

    # -- generation ------------------------------------------------------------------------------
    def _read_day(self, day: dt.date) -> Iterator[SourceBatch]:
        n = self.day_volume(day)
        tables = self._drifted if self.drifted(day) else self._base
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, day.toordinal(), 1])))
        hours = tables.hour_weekend if day.weekday() >= 5 else tables.hour_weekday
        # One multinomial over the day's 96 quarter hours keeps rows sorted by start across chunks.
        slot_ends = np.cumsum(rng.multinomial(n, np.repeat(hours / 4.0, 4)))
        dirty_total = dict.fromkeys(cal.DIRTY_KINDS, 0)
        n_chunks = max(1, -(-n // CHUNK_ROWS))
        for chunk in range(n_chunks):
            lo, hi = chunk * CHUNK_ROWS, min(n, (chunk + 1) * CHUNK_ROWS)
            rows = np.arange(lo, hi, dtype=np.int64)
            slots = np.searchsorted(slot_ends, rows, side="right").astype(np.int64)
            table, dirty = self._chunk(day, chunk, rows, slots, tables)
            for kind, count in dirty.items():
                dirty_total[kind] += count
            notes: dict[str, Any] = {}
            if chunk == n_chunks - 1:  # the manifest keeps the last batch's notes: give day totals
                notes["synthetic"] = {
                    "generator_version": GENERATOR_VERSION,
                    "rows": n,
                    "drifted": self.drifted(day),
                    "dirty_rows": dirty_total,
                }
            yield SourceBatch(table=table, notes=notes)
        log.debug("synthetic %s: %d rows, drifted=%s, dirty %s", day, n, self.drifted(day), dirty_total)

    def _chunk(
        self, day: dt.date, chunk: int, rows: I64, slots: I64, t: ScenarioTables
    ) -> tuple[pa.Table, dict[str, int]]:
        """Generate one chunk of a day: clean trips first, then the dirty rows."""
        n = len(rows)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, day.toordinal(), 2, chunk]))
        )
        weekend = day.weekday() >= 5

        # who: company, then a medallion of that company
        company = cal.draw(t.company_lut, rng.random(n))
        taxi = t.taxi_first[company] + (rng.random(n) * t.taxi_count[company]).astype(np.int64)

        # where: pickup area, dropoff area (same area boosted, some leave the city)
        pick = cal.draw(self._pickup_lut, rng.random(n))  # 0-based area index
        drop = cal.draw(self._dropoff_luts, pick + rng.random(n))  # pickup i's table is the i-th slice
        outside = rng.random(n) < self._outside[pick]
        airport_pick = np.isin(pick + 1, list(cal.AIRPORT_AREAS))

        # how far and how long
        centroid_miles = self._distances[pick, drop]
        miles = np.where(
            drop == pick,
            rng.lognormal(math.log(cal.WITHIN_AREA_MILES), 0.6, n),
            centroid_miles * cal.ROUTE_FACTOR * rng.lognormal(0.0, 0.25, n),
        )
        miles = np.where(outside, rng.lognormal(math.log(14.0), 0.5, n), miles)
        miles = np.clip(miles, 0.1, 150.0)
        hour = slots // 4
        hour_speed = np.asarray(cal.HOUR_SPEED)[hour]
        if weekend:
            hour_speed = np.maximum(hour_speed, 0.95)
        speed = (6.7 + 29.0 * (1.0 - np.exp(-miles / 7.0))) * hour_speed * rng.lognormal(0.0, 0.5, n)
        minutes = np.clip(np.round((30.0 + miles / speed * 3600.0) / 60.0), 1, 1439)  # under a day
        seconds = 60 * minutes.astype(np.int64)
        cancelled = rng.random(n) < cal.CANCELLED_RATE
        seconds = np.where(cancelled, 0, seconds)

        # recorded miles: company meters that report 0, cancellations, odometer glitches
        zero_miles = rng.random(n) < t.company_zero_miles[company]
        zero_miles |= cancelled & (rng.random(n) < cal.CANCELLED_ZERO_MILES)
        glitch = rng.random(n) < cal.MILES_GLITCH_RATE
        recorded = np.where(glitch, miles * rng.uniform(0.02, 0.3, n), miles)
        trip_miles = np.where(zero_miles, 0.0, np.maximum(0.1, np.round(recorded, 1)))

        # fare: meter (flag + distance + time) + noise, on the meter's steps; some flat fares
        meter = cal.RATE_PER_MILE * miles + cal.RATE_PER_MINUTE * np.maximum(0, seconds - 60) / 60.0
        noise = rng.normal(0.0, cal.FARE_NOISE_SIGMA, n) + (
            rng.random(n) < cal.FARE_TAIL_RATE
        ) * rng.exponential(cal.FARE_TAIL_MEAN, n)
        extra_fare = np.maximum(0.0, meter + noise) * t.fare_factor
        flag = cal.FLAG_DROP * t.fare_factor
        fare = flag + cal.METER_STEP * np.round(extra_fare / cal.METER_STEP)
        flat = rng.random(n) < cal.FLAT_FARE_RATE
        fare = np.where(flat, np.maximum(flag, np.round((flag + extra_fare) * 2.0) / 2.0), fare)
        fare = np.where(cancelled & (rng.random(n) < cal.CANCELLED_FLAG_FARE), flag, fare)
        fare = np.round(fare, 2)

        # payment: card more likely for longer / airport trips; Mobile under drift
        logit = (
            cal.CARD_LOGIT[0]
            + cal.CARD_LOGIT[1] * np.log(fare / t.fare_factor)
            + cal.CARD_LOGIT[2] * airport_pick
        )
        card = rng.random(n) < cal.sigmoid(logit + t.card_shift)
        payment = np.where(card, 0, 1 + cal.draw(t.other_lut, rng.random(n)))
        mobile_idx = 1 + [p for p, _ in cal.OTHER_PAYMENTS].index("Mobile")
        if t.mobile_share:
            payment = np.where(rng.random(n) < t.mobile_share, mobile_idx, payment)

        # tips: cards and Mobile tip (preset buttons or a custom amount), cash tips unrecorded
        unknown_idx = 1 + [p for p, _ in cal.OTHER_PAYMENTS].index("Unknown")
        cash_idx = 1 + [p for p, _ in cal.OTHER_PAYMENTS].index("Cash")
        tip_p = np.select(
            [(payment == 0) | (payment == mobile_idx), payment == unknown_idx, payment == cash_idx],
            [cal.CARD_TIPPED, cal.UNKNOWN_TIPPED, cal.CASH_TIPPED],
            0.0,
        )
        tipped = rng.random(n) < tip_p
        preset_ratio = np.asarray([r for r, _ in cal.PRESETS])[cal.draw(self._preset_lut, rng.random(n))]
        custom = fare * rng.lognormal(math.log(cal.CUSTOM_TIP_MEDIAN), cal.CUSTOM_TIP_SIGMA, n)
        custom = np.where(rng.random(n) < cal.WHOLE_DOLLAR_TIP, np.maximum(1.0, np.round(custom)), custom)
        tip = np.where(rng.random(n) < cal.PRESET_SHARE, fare * preset_ratio, custom)
        tips = np.where(tipped & (fare > 0), np.round(tip, 2), 0.0)

        # extras and tolls
        extras = np.asarray([v for v, _ in cal.EXTRAS])[cal.draw(self._extras_lut, rng.random(n))]
        extras = extras + cal.AIRPORT_FEE * (airport_pick & (rng.random(n) < cal.AIRPORT_FEE_RATE))
        extras = np.where(cancelled, 0.0, extras)
        tolls = np.where(rng.random(n) < cal.TOLL_RATE, rng.integers(1, 7, n).astype(np.float64), 0.0)

        # when: the quarter hour of the row, start within it, end floored to 15 minutes too
        day_us = (day.toordinal() - _EPOCH_ORDINAL) * _DAY_US
        start_exact = day_us + slots * _QUARTER_US + rng.integers(0, _QUARTER_US, n)
        start = start_exact - start_exact % _QUARTER_US
        end_exact = start_exact + seconds * _US
        end = end_exact - end_exact % _QUARTER_US

        # census tracts and centroids (a tract's centroid when the tract is known)
        pick_area, drop_area = pick + 1, drop + 1
        pick_tract, pick_tract_null = self._tracts(rng, pick)
        drop_tract, drop_tract_null = self._tracts(rng, drop)
        drop_tract_null |= outside
        pick_area_null = np.zeros(n, dtype=np.bool_)
        key = rows.copy()  # the trip_id key: the row of the day, shared by duplicates

        # -- dirty rows --------------------------------------------------------------------------
        which = 1 + (rng.random(n) * len(cal.DIRTY_KINDS)).astype(np.int64)
        kind = np.where(rng.random(n) < self.dirty_rate, which, 0)
        u = rng.random(n)  # one uniform per row drives the value of each kind
        dup = np.flatnonzero(kind == 6)  # duplicate: a copy of a row a few rows earlier (or later)
        offset = 1 + (u[dup] * 5).astype(np.int64)
        source = np.where(dup - offset >= 0, dup - offset, dup + offset)
        # a copy needs an original: copies of copies and copies past the chunk's end stay clean
        usable = (source < n) & (kind[np.minimum(source, n - 1)] != 6)
        kind[dup[~usable]] = 0
        dup, source = dup[usable], source[usable]
        counts = {name: int(np.sum(kind == i + 1)) for i, name in enumerate(cal.DIRTY_KINDS)}
        m = kind == 1  # absurd_fare: a keying error (> $1000) or a negative fare
        fare = np.where(m, np.where(u < 0.5, np.round(1000.0 + u * 17000.0, 2), -fare), fare)
        m = kind == 2  # zero_seconds_positive_miles
        seconds = np.where(m, 0, seconds)
        trip_miles = np.where(m, np.maximum(trip_miles, np.maximum(0.1, np.round(miles, 1))), trip_miles)
        end = np.where(m, start, end)
        m = kind == 3  # end_before_start: 15 minutes to 2 hours before
        end = np.where(m, start - (1 + (u * 8).astype(np.int64)) * _QUARTER_US, end)
        m = kind == 4  # unknown_payment_type
        payment = np.where(
            m, len(cal.OTHER_PAYMENTS) + 1 + (u * len(cal.UNKNOWN_PAYMENTS)).astype(np.int64), payment
        )
        m = kind == 5  # missing_pickup_area
        pick_area_null |= m
        pick_tract_null |= m
        m = kind == 7  # next_day: starts in the first hours of the next day
        shift = _DAY_US - slots * _QUARTER_US + (u * 12).astype(np.int64) * _QUARTER_US
        start = np.where(m, start + shift, start)
        end = np.where(m, end + shift, end)
        total = np.round(fare + tips + tolls + extras, 2)

        columns: dict[str, Any] = {
            "key": key, "taxi": taxi, "start": start, "end": end, "seconds": seconds,
            "trip_miles": trip_miles,
            "pick_tract": pick_tract, "pick_tract_null": pick_tract_null, "drop_tract": drop_tract,
            "drop_tract_null": drop_tract_null, "pick_area": pick_area, "pick_area_null": pick_area_null,
            "drop_area": drop_area, "outside": outside, "fare": fare, "tips": tips, "tolls": tolls,
            "extras": extras, "total": total, "payment": payment, "company": company,
        }  # fmt: skip
        for values in columns.values():
            values[dup] = values[source]
        return self._arrow(day, rows, columns, t), counts

    def _tracts(self, rng: np.random.Generator, area: I64) -> tuple[I64, Bool]:
        """Tract pool index and a hidden-tract mask for 0-based area indexes."""
        n = len(area)
        k = self._tract.first[area] + (rng.random(n) * self._tract.count[area]).astype(np.int64)
        airport = self._tract.airport[area]
        k = np.where((airport >= 0) & (rng.random(n) < cal.AIRPORT_TRACT_SHARE), airport, k)
        return k, rng.random(n) < self._tract.hidden[area]

    def _arrow(self, day: dt.date, rows: I64, c: dict[str, Any], t: ScenarioTables) -> pa.Table:
        """Typed arrow columns in RAW_SCHEMA order (nulls through masks, strings through takes)."""
        n = len(rows)
        ordinal_key = np.uint64(day.toordinal()) << np.uint64(32)
        trip_id = hex_ids(ordinal_key | c["key"].astype(np.uint64), self.seed)
        pick_null = c["pick_area_null"]
        drop_null = c["outside"]
        pick_tract_null = c["pick_tract_null"] | pick_null
        drop_tract_null = c["drop_tract_null"] | drop_null
        area_lat = np.asarray([a[0] for a in cal.AREA_CENTROIDS])
        area_lon = np.asarray([a[1] for a in cal.AREA_CENTROIDS])
        pick_lat = np.where(pick_tract_null, area_lat[c["pick_area"] - 1], self._tract.lat[c["pick_tract"]])
        pick_lon = np.where(pick_tract_null, area_lon[c["pick_area"] - 1], self._tract.lon[c["pick_tract"]])
        drop_lat = np.where(drop_tract_null, area_lat[c["drop_area"] - 1], self._tract.lat[c["drop_tract"]])
        drop_lon = np.where(drop_tract_null, area_lon[c["drop_area"] - 1], self._tract.lon[c["drop_tract"]])
        arrays = [
            trip_id,
            self._taxi_ids.take(pa.array(c["taxi"])),
            pa.array(c["start"].view("datetime64[us]")),
            pa.array(c["end"].view("datetime64[us]")),
            pa.array(c["seconds"]),
            pa.array(c["trip_miles"]),
            self._tract.names.take(pa.array(c["pick_tract"], mask=pick_tract_null)),
            self._tract.names.take(pa.array(c["drop_tract"], mask=drop_tract_null)),
            pa.array(c["pick_area"], mask=pick_null),
            pa.array(c["drop_area"], mask=drop_null),
            pa.array(c["fare"]),
            pa.array(c["tips"]),
            pa.array(c["tolls"]),
            pa.array(c["extras"]),
            pa.array(c["total"]),
            t.payment_names.take(pa.array(c["payment"])),
            t.company_names.take(pa.array(c["company"])),
            pa.array(pick_lat, mask=pick_null),
            pa.array(pick_lon, mask=pick_null),
            pa.array(drop_lat, mask=drop_null),
            pa.array(drop_lon, mask=drop_null),
            pa.repeat(pa.scalar(SOURCE_TAG, pa.string()), n),
            pa.array(rows),
            pa.nulls(n, pa.string()),
        ]
        return pa.Table.from_arrays(arrays, schema=RAW_SCHEMA)
