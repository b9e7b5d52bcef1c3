"""``keras_text.rounded``: the vectorised rounding gives exactly what ``round(v, 4)`` gives."""

import math

import numpy as np

from expertd.experts.keras_text import rounded


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(repr(x) == repr(y) for x, y in zip(a, b))


def test_float32_values_round_exactly_as_python_round():
    rng = np.random.default_rng(28)
    for low, high in [(-10, 10), (0, 1), (-1e-3, 1e-3), (3.99, 4.01)]:
        values = rng.uniform(low, high, 200_000).astype(np.float32)
        assert _same(rounded(values), [round(v, 4) for v in values.tolist()])


def test_ties_and_special_values():
    # 0.00005 and friends as float32 are near ties; NaN, infinities and -0.0 pass through
    values = np.array([0.00005, 0.00015, 0.00025, 0.12345, -0.00005, -0.0, -1e-6, 0.0,
                       np.inf, -np.inf, np.nan, 1.0, 0.99995], dtype=np.float32)
    got = rounded(values)
    want = [round(v, 4) for v in values.tolist()]
    assert _same([x for x in got if not math.isnan(x)], [x for x in want if not math.isnan(x)])
    assert math.isnan(got[10])


def test_other_dtypes_take_round_itself():
    values = np.array([0.12345678901, 2.67500000001, -0.00005], dtype=np.float64)
    assert _same(rounded(values), [round(v, 4) for v in values.tolist()])
