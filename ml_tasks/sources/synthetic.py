"""Synthetic Chicago taxi trips: deterministic, calibrated on real samples, with dirty rows and drift.

The default source of the demo and the benchmarks. Rows come out typed in :data:`RAW_SCHEMA`,
built directly from numpy arrays (no strings in between): about a million rows a second.

Determinism
    Day D is a pure function of ``(seed, D, trips_per_day, dirty_rate, drift_from)`` and of this
    module's :data:`GENERATOR_VERSION`: the random streams are seeded by the seed and the date
    (``numpy`` PCG64 via ``SeedSequence([seed, D.toordinal(), ...])``), a day is generated in fixed
    chunks of :data:`CHUNK_ROWS`, so asking for ``[D, D+3)`` returns exactly the three single days
    concatenated. ``trip_id`` is 40 hex digits (like the portal's SHA-1 ids) from a bijective 64-bit
    mix of (seed, date, row of the day): unique across days for a seed. ``taxi_id`` is 128 hex
    digits (like the portal) from a fixed pool of :data:`TAXI_POOL` medallions per seed; each
    medallion belongs to one company. Bump :data:`GENERATOR_VERSION` whenever output changes.

Calibration (measured on tfx_simple_data.csv, 15,002 real trips 2013-2016; see
tests/integration/test_synthetic_calibration.py, which recomputes the real figures)
    * payment: a logistic model of "Credit Card" on log(fare) and airport pickup
      (logit = -2.14 + 0.62 ln fare + 0.41 airport), which gives 33% card overall and rising with
      fare; the rest split as in the sample (Cash 98.8%, No Charge, Unknown, Dispute, Pcard, Prcard,
      a trace of Mobile).
    * tips: cash tips are practically never recorded (0.05% of cash trips); 95% of card trips tip,
      by preset buttons (15/20/25/30%) or a custom amount often rounded to whole dollars, so ~67% of
      card trips and ~22.5% of all trips are big tippers (tips > 0.2 * fare).
    * areas: pickup shares of the 77 community areas as in the sample (Near North 8, Loop 32,
      Near West 28, Lake View 6, O'Hare 76 dominate); dropoff by a gravity model (destination share
      over a distance decay, fitted to the sample's trip-distance histogram and raked to its dropoff
      shares), dropoff = pickup in ~27% of trips, outside the city (null area) for 20% of O'Hare and
      13% of Midway pickups; centroids are the sample's per-area centroids (the five areas absent
      from the sample use approximate ones).
    * distance: centroid distance x 1.15 x lognormal noise (short hops within an area); duration
      from a speed that grows with distance and drops in rush hours, in whole minutes; 3.2%
      cancelled trips (0 s, mostly 0 miles, flag-drop fare).
    * fare: Chicago meter $3.25 + $1.48/mile + $0.22/minute (robust fit on the sample) + noise
      (small symmetric, plus a waiting-time tail), on the meter's $0.20 steps; 3% flat fares.
    * ``trip_miles`` is 0 in ~27% of rows: the rate depends on the company (as in the sample,
      where some companies' meters never reported miles); 5% of recorded miles are odometer glitches.
    * census tracts: hidden (null) more often in quiet areas (as the portal's privacy rule does),
      ~28% overall; centroids are the tract's when it is known, else the area's.
    * company: 11 associations at their sample shares, 34% null, ~1% owner-operators
      ("NNNN - NNNNN Name" style, names invented here).
    * time: hour-of-day profiles for weekdays and weekends and day-of-week volume factors from the
      sample (Friday x1.17, Tuesday x0.91), +-3% day-to-day noise; timestamps floored to 15 minutes
      like the portal, trip_end = start + seconds floored to 15 minutes.
    * extras (extra passengers, airport fees) and rare tolls; trip_total = fare + tips + tolls + extras.

Dirty rows (``dirty_rate``, default 0.5% of rows, split equally over seven kinds; validation must
quarantine them): ``absurd_fare`` (fare > 1000 or negative), ``zero_seconds_positive_miles``,
``end_before_start``, ``unknown_payment_type`` (a value outside ``PAYMENT_TYPES``),
``missing_pickup_area`` (null pickup community area, tract and centroid), ``duplicate`` (a copy of a
nearby row of the same day, same trip_id), ``next_day`` (trip starts early on the next day, outside
the requested interval). The per-day counts are in the batch notes (manifest ``params.synthetic``).

Drift scenario (only when ``drift_from`` is set; days before it never drift), parameters in
:data:`DRIFT`:
    * payment: 12% of trips pay by ``Mobile`` (tipping like cards) and the card logit rises by 0.6:
      cash falls from ~66% to ~46%, card rises from ~33% to ~41%, so the big-tipper rate rises from
      ~22.5% to ~36% (a label shift as well as a feature shift);
    * fares inflate by 25% (flag drop, meter rates and flat fares: median $8.05 -> $10.05);
    * new companies take 15% of trips (Flash Cab, Sun Taxi, Taxicab Insurance Agency Llc,
      Star North Management LLC) from the others;
    * demand moves later: 30% of the hour-of-day profile is shifted two hours later.
The day volume does not drift.

Categorical draws use lookup tables of 65,536 slices (probabilities quantized to 1.5e-5) because
that is several times faster than a binary search per row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.sources.base import SourceBatch, SourceError

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bool = npt.NDArray[np.bool_]

GENERATOR_VERSION = "v1"
SOURCE_TAG = f"synthetic:{GENERATOR_VERSION}"
DEFAULT_SEED = 0
DEFAULT_DIRTY_RATE = 0.005
# Rows per generated chunk: bounds memory, and is part of the output's definition (each chunk has
# its own random stream), so changing it changes the data: bump GENERATOR_VERSION with it.
CHUNK_ROWS = 262_144
MAX_TRIPS_PER_DAY = 10_000_000
MAX_DIRTY_RATE = 0.5
TAXI_POOL = 7_000  # Chicago has ~6,900 taxi medallions
OPTION_NAMES = ("seed", "dirty_rate", "trips_per_day", "drift_from")

_US = 1_000_000
_QUARTER_US = 900 * _US
_DAY_US = 86_400 * _US
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()

# --- community areas (index = area - 1) -----------------------------------------------------------
# Centroids (lat, lon): the modal centroid per area in the real samples; 47, 52, 53, 54 and 62 never
# occur there and use approximate centroids of those areas.
AREA_CENTROIDS: tuple[tuple[float, float], ...] = (
    (42.0096, -87.6702), (42.0016, -87.6950), (41.9658, -87.6559), (41.9752, -87.6875),
    (41.9478, -87.6838), (41.9442, -87.6560), (41.9227, -87.6495), (41.8996, -87.6333),
    (42.0076, -87.8138), (41.9850, -87.8045), (41.9788, -87.7712), (41.9939, -87.7584),
    (41.9836, -87.7236), (41.9681, -87.7216), (41.9540, -87.7634), (41.9536, -87.7235),
    (41.9465, -87.8060), (41.9293, -87.7980), (41.9273, -87.7655), (41.9243, -87.7347),
    (41.9387, -87.7112), (41.9228, -87.6992), (41.9001, -87.7209), (41.9012, -87.6764),
    (41.8906, -87.7560), (41.8786, -87.7302), (41.8789, -87.7059), (41.8793, -87.6426),
    (41.8602, -87.7172), (41.8391, -87.7140), (41.8503, -87.6676), (41.8810, -87.6327),
    (41.8593, -87.6174), (41.8421, -87.6340), (41.8351, -87.6187), (41.8237, -87.6024),
    (41.8091, -87.6324), (41.8129, -87.6179), (41.8089, -87.5962), (41.7924, -87.6179),
    (41.7941, -87.5923), (41.7789, -87.5949), (41.7616, -87.5728), (41.7402, -87.6160),
    (41.7442, -87.5863), (41.7412, -87.5514), (41.7285, -87.5977), (41.7297, -87.5727),
    (41.7066, -87.6234), (41.7061, -87.5983), (41.6906, -87.5701), (41.7087, -87.5353),
    (41.6774, -87.6380), (41.6576, -87.6050), (41.6637, -87.5409), (41.7860, -87.7509),
    (41.8109, -87.7264), (41.8174, -87.6989), (41.8335, -87.6814), (41.8362, -87.6488),
    (41.8090, -87.6592), (41.7945, -87.7251), (41.7954, -87.6964), (41.7796, -87.7685),
    (41.7698, -87.7269), (41.7718, -87.6957), (41.7759, -87.6666), (41.7772, -87.6425),
    (41.7632, -87.6161), (41.7458, -87.7084), (41.7442, -87.6563), (41.7131, -87.6751),
    (41.7175, -87.6489), (41.6949, -87.7132), (41.6897, -87.6691), (41.9791, -87.9030),
    (41.9867, -87.6634),
)  # fmt: skip
# Trip counts per area in the sample (pickup, dropoff); areas never seen there get half a trip.
PICKUP_COUNTS: tuple[float, ...] = (
    71, 57, 269, 57, 111, 1180, 893, 4908, 1, 12, 12, 8, 7, 49, 7, 56, 3, 1, 7, 1, 51, 175, 7, 598, 9,
    1, 3, 1284, 5, 4, 17, 3303, 309, 20, 21, 2, .5, 1, 23, 1, 71, 8, 7, 2, 1, .5, .5, .5, 1, .5, .5,
    .5, .5, .5, .5, 255, 1, 2, 10, 7, 1, .5, 1, 1, 2, 1, .5, 2, 3, .5, 2, .5, 2, 1, .5, 895, 180,
)  # fmt: skip
DROPOFF_COUNTS: tuple[float, ...] = (
    104, 70, 301, 116, 157, 1107, 1036, 4307, 4, 18, 17, 12, 17, 55, 18, 90, 7, 1, 16, 8, 71, 293, 23,
    753, 10, 3, 5, 1450, 7, 6, 52, 2736, 411, 48, 35, 4, 3, 8, 23, 4, 84, 14, 12, 3, .5, 6, .5, 1, .5,
    1, 2, .5, .5, .5, 1, 181, .5, 7, 13, 22, 2, .5, 3, 4, 3, 2, 2, 2, 4, 3, 1, 2, 2, 2, 2, 516, 192,
)  # fmt: skip
AIRPORT_AREAS: dict[int, str] = {76: "17031980000", 56: "17031980100"}  # O'Hare, Midway tracts
# Census tracts per area seen in the sample (Chicago numbers tracts by community area: 17031AAKK00).
TRACTS_PER_AREA: dict[int, int] = {3: 12, 6: 34, 7: 20, 8: 20, 22: 16, 24: 24, 28: 12, 32: 5, 33: 3, 77: 12}
DEFAULT_TRACTS = 10
TARGET_SAME_AREA = 0.27  # share of trips ending in their pickup area
# Gravity model of the dropoff: P(j | i) ~ w_j / (1 + (miles_ij / 1.5)^2), no decay towards the
# airports (people ride there from anywhere), w raked to the sample's dropoff shares, the own area's
# pull set to give TARGET_SAME_AREA. Fitted on the sample's histogram of pickup-to-dropoff centroid
# distances (bins at 0, 1, 2, 3, 5, 8, 12 miles).
GRAVITY_MILES = 1.5
GRAVITY_POWER = 2.0
GRAVITY_AIRPORT = 1.0
ROUTE_FACTOR = 1.15  # driven miles over straight-line centroid miles (sample median 1.13)
WITHIN_AREA_MILES = 0.8  # median hop inside one area
DROPOFF_OUTSIDE = {76: 0.20, 56: 0.13}  # dropoff outside the city (null area), by pickup area
DROPOFF_OUTSIDE_DEFAULT = 0.025
AIRPORT_TRACT_SHARE = 0.9  # airport-area trips that start/end at the airport itself

# --- time -------------------------------------------------------------------------------------------
# Trips per start hour in the sample, Mon-Fri and Sat-Sun.
HOURS_WEEKDAY: tuple[float, ...] = (
    289, 226, 148, 82, 82, 76, 161, 261, 465, 568, 561, 466,
    559, 514, 566, 512, 555, 625, 691, 777, 707, 610, 592, 517,
)  # fmt: skip
HOURS_WEEKEND: tuple[float, ...] = (
    313, 318, 271, 210, 115, 67, 32, 41, 65, 96, 126, 153,
    186, 184, 170, 210, 208, 204, 250, 233, 259, 228, 245, 208,
)  # fmt: skip
# Volume factor by ISO weekday (Mon..Sun), the sample's trips per weekday over their mean.
WEEKDAY_FACTORS: tuple[float, ...] = (0.909, 0.907, 0.941, 1.027, 1.168, 1.136, 0.913)
DAY_NOISE_SIGMA = 0.03
# Speed multiplier by hour (rush hours slow, nights fast); weekends have no rush hours.
HOUR_SPEED: tuple[float, ...] = (
    1.25, 1.25, 1.25, 1.25, 1.25, 1.2, 1.1, 0.85, 0.85, 0.9, 0.95, 0.95,
    0.95, 0.95, 0.95, 0.9, 0.8, 0.8, 0.85, 1.0, 1.05, 1.1, 1.15, 1.2,
)  # fmt: skip

# --- trips ------------------------------------------------------------------------------------------
CANCELLED_RATE = 0.032  # 0-second trips (3.2% in the sample), mostly 0 miles and the flag drop
CANCELLED_ZERO_MILES = 0.91
CANCELLED_FLAG_FARE = 0.83
MILES_GLITCH_RATE = 0.05  # recorded miles a small fraction of the distance
FLAG_DROP = 3.25
RATE_PER_MILE = 1.48
RATE_PER_MINUTE = 0.22
METER_STEP = 0.20
FLAT_FARE_RATE = 0.03
FARE_NOISE_SIGMA = 0.3
FARE_TAIL_RATE = 0.12
FARE_TAIL_MEAN = 4.0

# Payment: P(card) = sigmoid(a + b ln(fare) + c airport); the rest in these proportions.
CARD_LOGIT = (-2.14, 0.624, 0.414)
OTHER_PAYMENTS: tuple[tuple[str, float], ...] = (
    ("Cash", 0.9877), ("No Charge", 0.0081), ("Unknown", 0.0029), ("Dispute", 0.0004),
    ("Pcard", 0.0003), ("Prcard", 0.0001), ("Mobile", 0.0005),
)  # fmt: skip
CARD_TIPPED = 0.95
UNKNOWN_TIPPED = 0.27
CASH_TIPPED = 0.0005
PRESET_SHARE = 0.25
PRESETS: tuple[tuple[float, float], ...] = ((0.15, 0.1), (0.20, 0.3), (0.25, 0.35), (0.30, 0.25))
CUSTOM_TIP_MEDIAN = 0.26
CUSTOM_TIP_SIGMA = 0.35
WHOLE_DOLLAR_TIP = 0.9
EXTRAS: tuple[tuple[float, float], ...] = ((0.0, 0.62), (1.0, 0.2), (1.5, 0.08), (2.0, 0.06), (3.0, 0.04))
AIRPORT_FEE, AIRPORT_FEE_RATE = 4.0, 0.7
TOLL_RATE = 0.002

# Companies: (name, share of trips, share of their trips with trip_miles == 0), from the sample.
COMPANIES: tuple[tuple[str | None, float, float], ...] = (
    ("Taxi Affiliation Services", 0.345, 0.43),
    (None, 0.3426, 0.03),
    ("Dispatch Taxi Affiliation", 0.109, 0.25),
    ("Blue Ribbon Taxi Association Inc.", 0.0727, 0.77),
    ("Choice Taxi Association", 0.0581, 0.275),
    ("Northwest Management LLC", 0.0367, 0.30),
    ("KOAM Taxi Association", 0.0164, 0.02),
    ("Top Cab Affiliation", 0.0088, 0.07),
    ("Chicago Elite Cab Corp. (Chicago Carriag", 0.0017, 1.0),  # truncated at 40 chars, as in the portal
    ("Chicago Medallion Leasing INC", 0.0015, 0.09),
    ("Chicago Medallion Management", 0.0011, 0.06),
    ("Chicago Elite Cab Corp.", 0.0006, 1.0),
    ("0412 - 50231 Lakeview Cab Co", 0.0012, 0.0),
    ("1173 - 62044 Prairie Cab Inc", 0.0012, 0.0),
    ("2288 - 71520 Wabash Taxi Corp", 0.0012, 0.0),
    ("3305 - 48812 Midway Express Inc", 0.0012, 0.0),
    ("4419 - 55307 Halsted Cab Co", 0.0012, 0.0),
    ("5521 - 60418 Kedzie Transit Inc", 0.0012, 0.0),
    ("6630 - 73109 Lakeshore Cab Inc", 0.0012, 0.0),
    ("2907 - 81226 Ashland Taxi LLC", 0.0012, 0.0),
)
# Cancelled trips also have 0 miles: scale the per-company rates so the total stays ~27%.
ZERO_MILES_SCALE = 0.93

DIRTY_KINDS: tuple[str, ...] = (
    "absurd_fare",
    "zero_seconds_positive_miles",
    "end_before_start",
    "unknown_payment_type",
    "missing_pickup_area",
    "duplicate",
    "next_day",
)
UNKNOWN_PAYMENTS: tuple[str, ...] = ("Split", "Voucher", "Comp")


@dataclass(frozen=True)
class DriftScenario:
    """What changes from ``drift_from`` on (see the module docstring)."""

    mobile_share: float = 0.12
    card_logit_shift: float = 0.6
    fare_factor: float = 1.25
    new_companies: tuple[str, ...] = (
        "Flash Cab",
        "Sun Taxi",
        "Taxicab Insurance Agency Llc",
        "Star North Management LLC",
    )
    new_company_share: float = 0.15
    new_company_zero_miles: float = 0.05
    hour_shift: int = 2
    hour_shift_weight: float = 0.3


DRIFT = DriftScenario()

# --- small helpers ----------------------------------------------------------------------------------
LUT_SIZE = 1 << 16
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: U64) -> U64:
    """SplitMix64's finalizer: a bijection on 64-bit words (so distinct keys give distinct ids)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _hex_ids(keys: U64, salt: int) -> pa.Array:
    """40-hex-digit ids (160 bits) from distinct 64-bit keys, built straight into an arrow buffer."""
    n = len(keys)
    # mix, xor the mixed salt, mix again: a bijection per salt, unrelated between salts
    salted = _mix64(np.asarray([salt], dtype=np.uint64) + _GOLDEN)
    w0 = _mix64(_mix64(keys) ^ salted)
    w1 = _mix64(w0 + _GOLDEN)
    w2 = _mix64(w1 + _GOLDEN)
    raw = np.stack([w0, w1, w2], axis=1).astype(">u8").view(np.uint8).reshape(n, 24)[:, :20]
    text = np.empty((n, 40), dtype=np.uint8)
    text[:, 0::2] = raw >> 4
    text[:, 1::2] = raw & 15
    # nibble -> ASCII '0'-'9' (48..57) or 'a'-'f' (97..102), arithmetic instead of a lookup
    text += 48
    text += (text > 57).astype(np.uint8) * 39
    offsets = np.arange(0, 40 * (n + 1), 40, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _lut(weights: F64) -> npt.NDArray[np.int8]:
    """A categorical sampler: category of each of LUT_SIZE equal slices of [0, 1).

    Drawing is ``lut[u * LUT_SIZE]``: several times faster than a binary search per row, at the cost
    of probabilities quantized to 1/65536 (a category keeps round(p * 65536) slices).
    """
    cells = np.round(np.cumsum(weights / weights.sum()) * LUT_SIZE).astype(np.int64)
    cells[-1] = LUT_SIZE
    counts = np.diff(cells, prepend=0)
    return np.repeat(np.arange(len(weights), dtype=np.int8), counts)


def _draw(lut: npt.NDArray[np.int8], u: F64) -> I64:
    """Categories for uniforms ``u`` (one lookup table, or several laid end to end)."""
    return lut.take((u * LUT_SIZE).astype(np.int64)).astype(np.int64)


def _sigmoid(x: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-x))
    return out


def _area_distances() -> F64:
    """Straight-line miles between area centroids (flat-earth approximation: a city is small)."""
    lat = np.array([c[0] for c in AREA_CENTROIDS])
    lon = np.array([c[1] for c in AREA_CENTROIDS])
    dy = (lat[:, None] - lat[None, :]) * 69.0
    dx = (lon[:, None] - lon[None, :]) * 69.0 * math.cos(math.radians(41.88))
    miles: F64 = np.hypot(dx, dy)
    return miles


def _dropoff_luts(distances: F64) -> npt.NDArray[np.int8]:
    """Lookup tables of the gravity model's dropoff area per pickup area, laid end to end.

    The destination weights are raked until the dropoff marginal matches the sample's, and the own
    area's pull is bisected until TARGET_SAME_AREA of trips stay in their area.
    """
    target = np.asarray(DROPOFF_COUNTS, dtype=np.float64)
    target /= target.sum()
    pickup = np.asarray(PICKUP_COUNTS, dtype=np.float64) / sum(PICKUP_COUNTS)
    pull = 1.0 / (1.0 + (distances / GRAVITY_MILES) ** GRAVITY_POWER)
    for area in AIRPORT_AREAS:
        pull[:, area - 1] = GRAVITY_AIRPORT
    weights = target.copy()
    cond = np.zeros_like(pull)
    for _ in range(8):
        low, high = 1e-3, 1e3
        for _ in range(50):
            own = math.sqrt(low * high)
            np.fill_diagonal(pull, own)
            cond = weights[None, :] * pull
            cond /= cond.sum(axis=1, keepdims=True)
            if float(np.sum(pickup * np.diag(cond))) > TARGET_SAME_AREA:
                high = own
            else:
                low = own
        weights = weights * target / (pickup @ cond)
    return np.concatenate([_lut(row) for row in cond])


@dataclass(frozen=True)
class _Tables:
    """Per-scenario lookup tables (base or drifted), derived once from the constants above."""

    company_lut: npt.NDArray[np.int8]
    company_names: pa.Array
    company_zero_miles: F64
    taxi_first: I64
    taxi_count: I64
    hour_weekday: F64
    hour_weekend: F64
    payment_names: pa.Array
    other_lut: npt.NDArray[np.int8]  # over payment_names[1:1+len(OTHER_PAYMENTS)]
    mobile_share: float
    card_shift: float
    fare_factor: float


def _hour_profile(counts: tuple[float, ...], shift: int, weight: float) -> F64:
    base = np.asarray(counts, dtype=np.float64)
    base /= base.sum()
    return (1 - weight) * base + weight * np.roll(base, shift) if weight else base


class SyntheticSource:
    """Deterministic, calibrated synthetic trips (see the module docstring).

    Args:
        trips_per_day: mean trips per day before day-of-week variation (0 gives empty days).
        seed: global seed; the date is mixed in, so each day has its own stream.
        dirty_rate: share of rows made dirty, split equally over :data:`DIRTY_KINDS`.
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
        self._base = self._tables(drifted=False)
        self._drifted = self._tables(drifted=True)
        self._distances = _area_distances()
        self._pickup_lut = _lut(np.asarray(PICKUP_COUNTS, dtype=np.float64))
        self._dropoff_luts = _dropoff_luts(self._distances)
        self._preset_lut = _lut(np.asarray([w for _, w in PRESETS]))
        self._extras_lut = _lut(np.asarray([w for _, w in EXTRAS]))
        self._outside = np.full(77, DROPOFF_OUTSIDE_DEFAULT)
        for area, share in DROPOFF_OUTSIDE.items():
            self._outside[area - 1] = share
        self._tract_tables()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_options(cls, settings: Settings, options: dict[str, Any]) -> Self:
        """Build from settings, overridden by CLI ``--option key=value`` strings.

        Raises:
            SourceError: an unknown option or a value that does not parse / is out of range.
        """
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise SourceError(f"synthetic source: unknown option(s) {unknown}; it takes {list(OPTION_NAMES)}")

        def parsed(key: str, default: Any, kind: type) -> Any:
            value = options.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                return default
            try:
                return kind(value.strip() if isinstance(value, str) else value)
            except (TypeError, ValueError):
                raise SourceError(
                    f"synthetic source: option {key}={value!r} is not a valid {kind.__name__}"
                ) from None

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
            trips_per_day=parsed("trips_per_day", settings.synthetic_trips_per_day, int),
            seed=parsed("seed", DEFAULT_SEED, int),
            dirty_rate=parsed("dirty_rate", DEFAULT_DIRTY_RATE, float),
            drift_from=drift_from,
        )

    def _taxi_pool(self) -> pa.Array:
        """128-hex medallion ids of this seed (hashlib is fine: a few thousand, built once)."""
        n = TAXI_POOL + TAXI_POOL  # base companies, then the drift scenario's new ones
        return pa.array(
            [hashlib.sha512(f"flywheel-taxi:{self.seed}:{k}".encode()).hexdigest() for k in range(n)],
            pa.string(),
        )

    def _tables(self, drifted: bool) -> _Tables:
        names: list[str | None] = [c[0] for c in COMPANIES]
        shares = np.array([c[1] for c in COMPANIES])
        zero = np.array([c[2] for c in COMPANIES]) * ZERO_MILES_SCALE
        shares = shares / shares.sum()
        # Medallions: company c owns a contiguous block of the pool, sized by its share.
        count = np.maximum(1, np.round(shares * TAXI_POOL)).astype(np.int64)
        first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        hour_shift, hour_weight = 0, 0.0
        mobile, card_shift, fare_factor = 0.0, 0.0, 1.0
        if drifted:
            k = len(DRIFT.new_companies)
            names += list(DRIFT.new_companies)
            shares = np.concatenate(
                [shares * (1 - DRIFT.new_company_share), np.full(k, DRIFT.new_company_share / k)]
            )
            zero = np.concatenate([zero, np.full(k, DRIFT.new_company_zero_miles)])
            new_count = np.full(k, TAXI_POOL // 20, dtype=np.int64)
            new_first = TAXI_POOL + np.arange(k, dtype=np.int64) * (TAXI_POOL // 20)
            count = np.concatenate([count, new_count])
            first = np.concatenate([first, new_first])
            hour_shift, hour_weight = DRIFT.hour_shift, DRIFT.hour_shift_weight
            mobile, card_shift, fare_factor = DRIFT.mobile_share, DRIFT.card_logit_shift, DRIFT.fare_factor
        other_names = [p for p, _ in OTHER_PAYMENTS]
        return _Tables(
            company_lut=_lut(shares),
            company_names=pa.array(names, pa.string()),
            company_zero_miles=zero,
            taxi_first=first,
            taxi_count=count,
            hour_weekday=_hour_profile(HOURS_WEEKDAY, hour_shift, hour_weight),
            hour_weekend=_hour_profile(HOURS_WEEKEND, hour_shift, hour_weight),
            payment_names=pa.array(["Credit Card", *other_names, *UNKNOWN_PAYMENTS], pa.string()),
            other_lut=_lut(np.array([w for _, w in OTHER_PAYMENTS])),
            mobile_share=mobile,
            card_shift=card_shift,
            fare_factor=fare_factor,
        )

    def _tract_tables(self) -> None:
        """A pool of census tracts: per area, its numbered tracts (+ the airport's), with centroids."""
        names: list[str] = []
        lat: list[float] = []
        lon: list[float] = []
        first = np.zeros(77, dtype=np.int64)
        count = np.zeros(77, dtype=np.int64)
        airport = np.full(77, -1, dtype=np.int64)
        for area in range(1, 78):
            c_lat, c_lon = AREA_CENTROIDS[area - 1]
            first[area - 1] = len(names)
            n = TRACTS_PER_AREA.get(area, DEFAULT_TRACTS)
            count[area - 1] = n
            for k in range(n):
                names.append(f"17031{area:02d}{k + 1:02d}00")
                # tract centroids scatter around the area's (deterministic, ~0.5 mile)
                lat.append(round(c_lat + ((k * 37) % 11 - 5) * 0.0015, 6))
                lon.append(round(c_lon + ((k * 53) % 13 - 6) * 0.0015, 6))
            if area in AIRPORT_AREAS:
                airport[area - 1] = len(names)
                names.append(AIRPORT_AREAS[area])
                lat.append(c_lat)
                lon.append(c_lon)
        self._tract_names = pa.array(names, pa.string())
        self._tract_lat = np.array(lat)
        self._tract_lon = np.array(lon)
        self._tract_first, self._tract_count, self._tract_airport = first, count, airport
        # Tracts are hidden when quiet (the portal's < 3 trips per tract x 15 min rule): the null
        # share falls with the area's volume; logistic fit on the sample's dropoff tracts.
        share = np.asarray(DROPOFF_COUNTS) / sum(DROPOFF_COUNTS)
        self._tract_null = _sigmoid(-3.5 - 1.0 * np.log(share))
        for area in AIRPORT_AREAS:
            self._tract_null[area - 1] = 0.22

    # -- the Source protocol --------------------------------------------------------------------
    def drifted(self, day: dt.date) -> bool:
        """Whether ``day`` is under the drift scenario."""
        return self.drift_from is not None and day >= self.drift_from

    def day_volume(self, day: dt.date) -> int:
        """Rows generated for ``day`` (day-of-week factor and deterministic day noise included)."""
        if self.trips_per_day == 0:
            return 0
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, day.toordinal(), 0])))
        factor = WEEKDAY_FACTORS[day.weekday()] * math.exp(rng.normal(0.0, DAY_NOISE_SIGMA))
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
        dirty_total = dict.fromkeys(DIRTY_KINDS, 0)
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
        self, day: dt.date, chunk: int, rows: I64, slots: I64, t: _Tables
    ) -> tuple[pa.Table, dict[str, int]]:
        """Generate one chunk of a day: clean trips first, then the dirty rows."""
        n = len(rows)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, day.toordinal(), 2, chunk]))
        )
        weekend = day.weekday() >= 5

        # who: company, then a medallion of that company
        company = _draw(t.company_lut, rng.random(n))
        taxi = t.taxi_first[company] + (rng.random(n) * t.taxi_count[company]).astype(np.int64)

        # where: pickup area, dropoff area (same area boosted, some leave the city)
        pick = _draw(self._pickup_lut, rng.random(n))  # 0-based area index
        drop = _draw(self._dropoff_luts, pick + rng.random(n))  # pickup i's table is the i-th slice
        outside = rng.random(n) < self._outside[pick]
        airport_pick = np.isin(pick + 1, list(AIRPORT_AREAS))

        # how far and how long
        centroid_miles = self._distances[pick, drop]
        miles = np.where(
            drop == pick,
            rng.lognormal(math.log(WITHIN_AREA_MILES), 0.6, n),
            centroid_miles * ROUTE_FACTOR * rng.lognormal(0.0, 0.25, n),
        )
        miles = np.where(outside, rng.lognormal(math.log(14.0), 0.5, n), miles)
        miles = np.clip(miles, 0.1, 150.0)
        hour = slots // 4
        hour_speed = np.asarray(HOUR_SPEED)[hour]
        if weekend:
            hour_speed = np.maximum(hour_speed, 0.95)
        speed = (6.7 + 29.0 * (1.0 - np.exp(-miles / 7.0))) * hour_speed * rng.lognormal(0.0, 0.5, n)
        minutes = np.clip(np.round((30.0 + miles / speed * 3600.0) / 60.0), 1, 1439)  # under a day
        seconds = 60 * minutes.astype(np.int64)
        cancelled = rng.random(n) < CANCELLED_RATE
        seconds = np.where(cancelled, 0, seconds)

        # recorded miles: company meters that report 0, cancellations, odometer glitches
        zero_miles = rng.random(n) < t.company_zero_miles[company]
        zero_miles |= cancelled & (rng.random(n) < CANCELLED_ZERO_MILES)
        glitch = rng.random(n) < MILES_GLITCH_RATE
        recorded = np.where(glitch, miles * rng.uniform(0.02, 0.3, n), miles)
        trip_miles = np.where(zero_miles, 0.0, np.maximum(0.1, np.round(recorded, 1)))

        # fare: meter (flag + distance + time) + noise, on the meter's steps; some flat fares
        meter = RATE_PER_MILE * miles + RATE_PER_MINUTE * np.maximum(0, seconds - 60) / 60.0
        noise = rng.normal(0.0, FARE_NOISE_SIGMA, n) + (rng.random(n) < FARE_TAIL_RATE) * rng.exponential(
            FARE_TAIL_MEAN, n
        )
        extra_fare = np.maximum(0.0, meter + noise) * t.fare_factor
        flag = FLAG_DROP * t.fare_factor
        fare = flag + METER_STEP * np.round(extra_fare / METER_STEP)
        flat = rng.random(n) < FLAT_FARE_RATE
        fare = np.where(flat, np.maximum(flag, np.round((flag + extra_fare) * 2.0) / 2.0), fare)
        fare = np.where(cancelled & (rng.random(n) < CANCELLED_FLAG_FARE), flag, fare)
        fare = np.round(fare, 2)

        # payment: card more likely for longer / airport trips; Mobile under drift
        logit = CARD_LOGIT[0] + CARD_LOGIT[1] * np.log(fare / t.fare_factor) + CARD_LOGIT[2] * airport_pick
        card = rng.random(n) < _sigmoid(logit + t.card_shift)
        payment = np.where(card, 0, 1 + _draw(t.other_lut, rng.random(n)))
        mobile_idx = 1 + [p for p, _ in OTHER_PAYMENTS].index("Mobile")
        if t.mobile_share:
            payment = np.where(rng.random(n) < t.mobile_share, mobile_idx, payment)

        # tips: cards and Mobile tip (preset buttons or a custom amount), cash tips unrecorded
        unknown_idx = 1 + [p for p, _ in OTHER_PAYMENTS].index("Unknown")
        cash_idx = 1 + [p for p, _ in OTHER_PAYMENTS].index("Cash")
        tip_p = np.select(
            [(payment == 0) | (payment == mobile_idx), payment == unknown_idx, payment == cash_idx],
            [CARD_TIPPED, UNKNOWN_TIPPED, CASH_TIPPED],
            0.0,
        )
        tipped = rng.random(n) < tip_p
        preset_ratio = np.asarray([r for r, _ in PRESETS])[_draw(self._preset_lut, rng.random(n))]
        custom = fare * rng.lognormal(math.log(CUSTOM_TIP_MEDIAN), CUSTOM_TIP_SIGMA, n)
        custom = np.where(rng.random(n) < WHOLE_DOLLAR_TIP, np.maximum(1.0, np.round(custom)), custom)
        tip = np.where(rng.random(n) < PRESET_SHARE, fare * preset_ratio, custom)
        tips = np.where(tipped & (fare > 0), np.round(tip, 2), 0.0)

        # extras and tolls
        extras = np.asarray([v for v, _ in EXTRAS])[_draw(self._extras_lut, rng.random(n))]
        extras = extras + AIRPORT_FEE * (airport_pick & (rng.random(n) < AIRPORT_FEE_RATE))
        extras = np.where(cancelled, 0.0, extras)
        tolls = np.where(rng.random(n) < TOLL_RATE, rng.integers(1, 7, n).astype(np.float64), 0.0)

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
        which = 1 + (rng.random(n) * len(DIRTY_KINDS)).astype(np.int64)
        kind = np.where(rng.random(n) < self.dirty_rate, which, 0)
        u = rng.random(n)  # one uniform per row drives the value of each kind
        dup = np.flatnonzero(kind == 6)  # duplicate: a copy of a row a few rows earlier (or later)
        offset = 1 + (u[dup] * 5).astype(np.int64)
        source = np.where(dup - offset >= 0, dup - offset, dup + offset)
        # a copy needs an original: copies of copies and copies past the chunk's end stay clean
        usable = (source < n) & (kind[np.minimum(source, n - 1)] != 6)
        kind[dup[~usable]] = 0
        dup, source = dup[usable], source[usable]
        counts = {name: int(np.sum(kind == i + 1)) for i, name in enumerate(DIRTY_KINDS)}
        m = kind == 1  # absurd_fare: a keying error (> $1000) or a negative fare
        fare = np.where(m, np.where(u < 0.5, np.round(1000.0 + u * 17000.0, 2), -fare), fare)
        m = kind == 2  # zero_seconds_positive_miles
        seconds = np.where(m, 0, seconds)
        trip_miles = np.where(m, np.maximum(trip_miles, np.maximum(0.1, np.round(miles, 1))), trip_miles)
        end = np.where(m, start, end)
        m = kind == 3  # end_before_start: 15 minutes to 2 hours before
        end = np.where(m, start - (1 + (u * 8).astype(np.int64)) * _QUARTER_US, end)
        m = kind == 4  # unknown_payment_type
        payment = np.where(m, len(OTHER_PAYMENTS) + 1 + (u * len(UNKNOWN_PAYMENTS)).astype(np.int64), payment)
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
        k = self._tract_first[area] + (rng.random(n) * self._tract_count[area]).astype(np.int64)
        airport = self._tract_airport[area]
        k = np.where((airport >= 0) & (rng.random(n) < AIRPORT_TRACT_SHARE), airport, k)
        return k, rng.random(n) < self._tract_null[area]

    def _arrow(self, day: dt.date, rows: I64, c: dict[str, Any], t: _Tables) -> pa.Table:
        """Typed arrow columns in RAW_SCHEMA order (nulls through masks, strings through takes)."""
        n = len(rows)
        ordinal_key = np.uint64(day.toordinal()) << np.uint64(32)
        trip_id = _hex_ids(ordinal_key | c["key"].astype(np.uint64), self.seed)
        pick_null = c["pick_area_null"]
        drop_null = c["outside"]
        pick_tract_null = c["pick_tract_null"] | pick_null
        drop_tract_null = c["drop_tract_null"] | drop_null
        area_lat = np.asarray([a[0] for a in AREA_CENTROIDS])
        area_lon = np.asarray([a[1] for a in AREA_CENTROIDS])
        pick_lat = np.where(pick_tract_null, area_lat[c["pick_area"] - 1], self._tract_lat[c["pick_tract"]])
        pick_lon = np.where(pick_tract_null, area_lon[c["pick_area"] - 1], self._tract_lon[c["pick_tract"]])
        drop_lat = np.where(drop_tract_null, area_lat[c["drop_area"] - 1], self._tract_lat[c["drop_tract"]])
        drop_lon = np.where(drop_tract_null, area_lon[c["drop_area"] - 1], self._tract_lon[c["drop_tract"]])
        arrays = [
            trip_id,
            self._taxi_ids.take(pa.array(c["taxi"])),
            pa.array(c["start"].view("datetime64[us]")),
            pa.array(c["end"].view("datetime64[us]")),
            pa.array(c["seconds"]),
            pa.array(c["trip_miles"]),
            self._tract_names.take(pa.array(c["pick_tract"], mask=pick_tract_null)),
            self._tract_names.take(pa.array(c["drop_tract"], mask=drop_tract_null)),
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
