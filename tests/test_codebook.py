"""KeyCodebook: the projection and the EMA-fitted keys as a scikit-learn transformer.

The engine functions it calls are tested against references in test_engine.py;
its bad input, persistence and interruption in test_validation.py and
test_persistence.py; dask arrays in test_dask.py.
"""

import numpy as np
import pytest
from _helpers import X_IRIS, small_codebook
from _strategies import PROPERTY, codebooks, data_arrays, fitted_codebooks
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linprog

from skkvb import KeyCodebook
from skkvb.engine.keys import LAPLACE_EPS

# ------------------------------------------------------------------ codes


def test_codebook_transform_gives_codes_of_the_nearest_keys():
    codebook = small_codebook().fit(X_IRIS)
    codes = codebook.transform(X_IRIS)
    heads = (X_IRIS.astype(np.float32) @ codebook.projection_).reshape(150, 16, 3)
    distances = ((heads[:, :, None, :] - codebook.keys_[None]) ** 2).sum(-1)
    np.testing.assert_allclose(
        np.take_along_axis(distances, codes[..., None], -1)[..., 0], distances.min(-1), atol=1e-4
    )
    assert codebook.get_feature_names_out().tolist()[:2] == ["keycodebook0", "keycodebook1"]


@PROPERTY
@given(data=st.data())
def test_codes_do_not_depend_on_the_other_samples_of_a_batch(data):
    """Even between near-duplicate keys (revived vs EMA-averaged copies of a
    head), within rounding of each other."""
    n_features = data.draw(st.integers(1, 6), label="n_features")
    X = data.draw(data_arrays(st.integers(1, 300), n_features), label="X")
    codebook = data.draw(fitted_codebooks(n_features, X), label="codebook")
    codes = codebook.transform(X)
    rows = data.draw(st.lists(st.integers(0, len(X) - 1), min_size=1, max_size=300), label="rows")
    rows = np.asarray(rows)
    np.testing.assert_array_equal(codebook.transform(X[rows]), codes[rows])
    np.testing.assert_array_equal(codebook.transform(X[rows[:1]]), codes[rows[:1]])


# ------------------------------------------------------------------- keys


def test_codebook_partial_fit_continues_the_ema_stream():
    streamed = small_codebook(batch_size=50)
    for start in range(0, 150, 50):
        streamed.partial_fit(X_IRIS[start : start + 50])
    assert streamed.n_steps_ == 3 and np.isfinite(streamed.keys_).all()
    whole = small_codebook(batch_size=50).partial_fit(X_IRIS)
    # One pass over the same batches in the same order: the same keys.
    np.testing.assert_allclose(streamed.keys_, whole.keys_, rtol=1e-6)


def hull_distance(points, target):
    """Max-norm distance from ``target`` to the convex hull of the rows of
    ``points``, by linear programming over convex weights."""
    points = np.unique(points.astype(np.float64), axis=0)
    n_points, dim = points.shape
    cost = np.r_[np.zeros(n_points), 1.0]
    slack = -np.ones((dim, 1))
    bounds_ub = np.block([[points.T, slack], [-points.T, slack]])
    result = linprog(
        cost,
        A_ub=bounds_ub,
        b_ub=np.r_[target, -target],
        A_eq=np.r_[np.ones(n_points), 0.0][None],
        b_eq=[1.0],
        bounds=[(0, None)] * (n_points + 1),
        method="highs",
    )
    assert result.status == 0, result.message
    return result.fun


@PROPERTY
@given(data=st.data())
def test_ema_keys_stay_inside_the_convex_hull_of_the_heads_they_saw(data):
    """Keys start at heads, are revived at heads, and are EMA averages of heads.

    The EMA statistics are exact convex combinations: sums / counts lies in the
    hull. The key itself is sums / smoothed(counts), where Laplace smoothing
    scales it by n / (n + eps) * (total + K eps) / total, with total >= n: a
    key with EMA count n is within K * eps / n (relative) of the hull, twice that
    once partial_fit resumed from the keys (the sums are then keys times
    smoothed counts). That is tight for live keys. Revival (dead_key_threshold
    > 0) keeps every count above threshold * batch / K; without it, keys no
    head picks do not move (test below).
    """
    n_features = data.draw(st.integers(1, 4), label="n_features")
    codebook = data.draw(codebooks(n_features), label="codebook")
    codebook.set_params(
        decay=data.draw(st.floats(0.0, 0.99), label="decay"),
        dead_key_threshold=data.draw(st.floats(0.01, 2.0), label="dead_key_threshold"),
    )
    X = data.draw(data_arrays(st.integers(1, 60), n_features), label="X")
    more = data.draw(data_arrays(st.integers(0, 30), n_features), label="more")
    codebook.fit(X)
    seen = X
    if len(more):
        codebook.partial_fit(more)
        seen = np.concatenate([X, more])

    n_codebooks, n_keys, _ = codebook.keys_.shape
    heads = (seen.astype(np.float32) @ codebook.projection_).reshape(len(seen), n_codebooks, -1)
    rounding = 1e-4 * np.abs(heads).max() + 1e-6  # float32 EMA over a few hundred steps
    assert np.isfinite(codebook.keys_).all() and (codebook.key_counts_ > 0).all()
    for c in range(n_codebooks):
        for k in range(n_keys):
            key, count = codebook.keys_[c, k].astype(np.float64), float(codebook.key_counts_[c, k])
            # partial_fit resumes from sums = keys * smoothed(counts): one more smoothing.
            laplace = 2 * n_keys * LAPLACE_EPS / count * np.abs(key).max()
            distance = hull_distance(heads[:, c], key)
            assert distance <= rounding + laplace, ("key", c, k, distance, count)


@pytest.mark.parametrize("decay, max_iter", [(0.0, 1), (0.5, 40)])
def test_without_revival_unpicked_keys_stay_inside_the_hull(decay, max_iter):
    X = np.full((4, 1), 5.0)  # every head is 5: the hull is the point 5
    codebook = KeyCodebook(
        n_keys=2, projection="none", decay=decay, dead_key_threshold=0.0,
        max_iter=max_iter, batch_size=4, random_state=0,
    ).fit(X)
    # Key 0 wins every tie; key 1 is never picked.
    np.testing.assert_allclose(codebook.keys_.ravel(), [5.0, 5.0], rtol=1e-4)
