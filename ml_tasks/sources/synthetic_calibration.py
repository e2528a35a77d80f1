"""The synthetic source's calibration: constants measured on real trips, the drift scenario, derived tables.

Each constant's origin is in its comment; the calibration as a whole and the drift scenario are described
in docs/synthetic-source.md. Changing any value changes the data: bump ``GENERATOR_VERSION`` with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Bool = npt.NDArray[np.bool_]

TAXI_POOL = 7_000  # Chicago has ~6,900 taxi medallions

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

# --- derived tables ---------------------------------------------------------------------------------
LUT_SIZE = 1 << 16


def lut(weights: F64) -> npt.NDArray[np.int8]:
    """A categorical sampler: category of each of LUT_SIZE equal slices of [0, 1).

    Drawing is ``lut[u * LUT_SIZE]``: several times faster than a binary search per row, at the cost
    of probabilities quantized to 1/65536 (a category keeps round(p * 65536) slices).
    """
    cells = np.round(np.cumsum(weights / weights.sum()) * LUT_SIZE).astype(np.int64)
    cells[-1] = LUT_SIZE
    counts = np.diff(cells, prepend=0)
    return np.repeat(np.arange(len(weights), dtype=np.int8), counts)


def draw(lut: npt.NDArray[np.int8], u: F64) -> I64:
    """Categories for uniforms ``u`` (one lookup table, or several laid end to end)."""
    return lut.take((u * LUT_SIZE).astype(np.int64)).astype(np.int64)


def sigmoid(x: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-x))
    return out


def area_distances() -> F64:
    """Straight-line miles between area centroids (flat-earth approximation: a city is small)."""
    lat = np.array([c[0] for c in AREA_CENTROIDS])
    lon = np.array([c[1] for c in AREA_CENTROIDS])
    dy = (lat[:, None] - lat[None, :]) * 69.0
    dx = (lon[:, None] - lon[None, :]) * 69.0 * math.cos(math.radians(41.88))
    miles: F64 = np.hypot(dx, dy)
    return miles


def dropoff_luts(distances: F64) -> npt.NDArray[np.int8]:
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
    return np.concatenate([lut(row) for row in cond])


@dataclass(frozen=True)
class ScenarioTables:
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


def hour_profile(counts: tuple[float, ...], shift: int, weight: float) -> F64:
    base = np.asarray(counts, dtype=np.float64)
    base /= base.sum()
    return (1 - weight) * base + weight * np.roll(base, shift) if weight else base


def scenario_tables(drifted: bool) -> ScenarioTables:
    """The lookup tables of the base scenario or, ``drifted``, of :data:`DRIFT`."""
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
    return ScenarioTables(
        company_lut=lut(shares),
        company_names=pa.array(names, pa.string()),
        company_zero_miles=zero,
        taxi_first=first,
        taxi_count=count,
        hour_weekday=hour_profile(HOURS_WEEKDAY, hour_shift, hour_weight),
        hour_weekend=hour_profile(HOURS_WEEKEND, hour_shift, hour_weight),
        payment_names=pa.array(["Credit Card", *other_names, *UNKNOWN_PAYMENTS], pa.string()),
        other_lut=lut(np.array([w for _, w in OTHER_PAYMENTS])),
        mobile_share=mobile,
        card_shift=card_shift,
        fare_factor=fare_factor,
    )


@dataclass(frozen=True)
class TractTables:
    """The census-tract pool: per area its numbered tracts (+ the airport's), centroids, hidden share."""

    names: pa.Array
    lat: F64
    lon: F64
    first: I64  # per 0-based area: first tract of the pool
    count: I64
    airport: I64  # per area: the airport tract, or -1
    hidden: F64  # per area: share of trips whose tract is hidden (null)


def tract_tables() -> TractTables:
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
    # Tracts are hidden when quiet (the portal's < 3 trips per tract x 15 min rule): the null
    # share falls with the area's volume; logistic fit on the sample's dropoff tracts.
    share = np.asarray(DROPOFF_COUNTS) / sum(DROPOFF_COUNTS)
    hidden = sigmoid(-3.5 - 1.0 * np.log(share))
    for area in AIRPORT_AREAS:
        hidden[area - 1] = 0.22
    return TractTables(
        pa.array(names, pa.string()), np.array(lat), np.array(lon), first, count, airport, hidden
    )
