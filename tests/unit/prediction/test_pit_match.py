"""The point-in-time match of ``prediction/pit.py`` against a row-by-row reference, on random keys and times.

(Its equality with Feast's own join on a real data root: tests/integration/test_predict_pit.py.)
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.prediction.checked_registry import Named, RegisteredView
from ml_tasks.prediction.pit import _codes, _latest, views_supported

TTL = 50


def _reference(
    f_keys: list[tuple[object, ...]],
    f_ts: list[int | None],
    e_keys: list[tuple[object, ...]],
    e_ts: list[int],
) -> list[int]:
    """Per entity: the feature row with the same (non-null) key, the latest time <= the entity's, within
    the ttl (the last such row read on a tie); else -1."""
    out = []
    for key, ts in zip(e_keys, e_ts, strict=True):
        best = -1
        for i, (f_key, f_t) in enumerate(zip(f_keys, f_ts, strict=True)):
            if None in key or None in f_key or f_t is None or f_key != key or f_t > ts:
                continue
            if best < 0 or f_t >= (f_ts[best] or 0):
                best = i
        out.append(best if best >= 0 and (f_ts[best] or 0) + TTL >= ts else -1)
    return out


def _match(
    f_keys: list[pa.ChunkedArray], f_ts: list[int | None], e_keys: list[pa.ChunkedArray], e_ts: list[int]
) -> list[int]:
    f_code, e_code = _codes(f_keys, e_keys)
    f_code = np.where([t is not None for t in f_ts], f_code, -1)
    times = np.array([t if t is not None else 0 for t in f_ts], dtype=np.int64)
    return [int(i) for i in _latest(f_code, times, e_code, np.array(e_ts, dtype=np.int64), TTL)]


@pytest.mark.parametrize("seed", range(6))
def test_match_equals_the_row_by_row_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_f, n_e = 60, 400
    companies = ["a", "b", "c", None]
    f_company = [companies[i] for i in rng.integers(0, 4, n_f)]
    f_area = [int(a) if a < 5 else None for a in rng.integers(0, 6, n_f)]
    f_ts = [int(t) if t < 190 else None for t in rng.integers(0, 200, n_f)]
    # entity keys: some no feature row has ("z", area 9), some null; times around and past the ttl
    e_company = [[*companies, "z"][i] for i in rng.integers(0, 5, n_e)]
    e_area = [int(a) if a < 6 else None for a in rng.integers(0, 7, n_e)]
    e_area = [9 if a == 5 else a for a in e_area]
    e_ts = [int(t) for t in rng.integers(-20, 300, n_e)]
    # two keys, as one view with a compound key
    got = _match(
        [pa.chunked_array([pa.array(f_company)]), pa.chunked_array([pa.array(f_area, pa.int64())])],
        f_ts,
        [pa.chunked_array([pa.array(e_company)]), pa.chunked_array([pa.array(e_area, pa.int64())])],
        e_ts,
    )
    expected = _reference(list(zip(f_company, f_area, strict=True)), f_ts,
                          list(zip(e_company, e_area, strict=True)), e_ts)  # fmt: skip
    assert got == expected
    assert 20 < sum(g >= 0 for g in got) < n_e - 20  # matches and misses both covered
    # one key
    got = _match(
        [pa.chunked_array([pa.array(f_company)])], f_ts, [pa.chunked_array([pa.array(e_company)])], e_ts
    )
    expected = _reference([(c,) for c in f_company], f_ts, [(c,) for c in e_company], e_ts)
    assert got == expected


def test_ttl_edges_ties_and_no_feature_rows() -> None:
    f_keys = [pa.chunked_array([pa.array(["a", "a", "a", "b"])])]
    e_keys = [pa.chunked_array([pa.array(["a"] * 5 + ["b", None])])]
    # a feature row's own time, its ttl's end, one after; before any row; a tie at 10 (the last read wins)
    f_ts: list[int | None] = [0, 10, 10, 5]
    e_ts = [0, 10, 10 + TTL, 11 + TTL, -1, 5, 5]
    assert _match(f_keys, f_ts, e_keys, e_ts) == [0, 2, 2, -1, -1, 3, -1]
    assert _match([pa.chunked_array([pa.array([], pa.string())])], [], e_keys, e_ts) == [-1] * 7
    assert _match(f_keys, [None] * 4, e_keys, e_ts) == [-1] * 7


@pytest.mark.parametrize(
    ("ttl", "supported"), [(dt.timedelta(days=28), True), (dt.timedelta(0), False), (None, False)]
)
def test_only_views_with_an_age_limit_are_matched_here(ttl: dt.timedelta | None, supported: bool) -> None:
    """Feast reads a zero ttl as no age limit: such a view goes to Feast's own join, not this match."""
    view = RegisteredView(
        name="area", entity_columns=(Named("area"),), features=(Named("trips"),), ttl=ttl,
        path="/data/features/area/dt=*/part-*.parquet", timestamp_field="event_timestamp",
    )  # fmt: skip
    assert views_supported([view]) is supported
