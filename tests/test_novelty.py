"""Novelty scores: KeyCodebook.score_samples (distance to the nearest keys) and
KeyValueBottleneckClassifier.score_samples (cell counts and distances), against
slow numpy references, on toy shifts, and through streams and unlearning.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import fingerprint
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import InvalidParameterError

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

RNG = np.random.RandomState(0)
# Two blobs; keys are fitted on both, labels come from blob A only.
BLOB_A = RNG.normal(size=(400, 6)) + np.r_[3.0, 0, 0, 0, 0, 0]
BLOB_B = RNG.normal(size=(400, 6)) - np.r_[3.0, 0, 0, 0, 0, 0]
Y_A = (BLOB_A[:, 1] > 0).astype(int)
KEYS = FrozenEstimator(
    KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(
        np.vstack([BLOB_A, BLOB_B])
    )
)


def small_codebook():
    return KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)


def heads(codebook, X):
    n_codebooks, _, key_dim = codebook.keys_.shape
    projection = codebook.projection_.astype(np.float64)
    return (np.asarray(X, dtype=np.float64) @ projection).reshape(len(X), n_codebooks, key_dim)


def distances_to_codes(codebook, X):
    """(N, C) squared distances of X's heads to the keys its codes name, in float64."""
    keys = codebook.keys_.astype(np.float64)
    codes = codebook.transform(X)
    fetched = keys[np.arange(keys.shape[0]), codes]
    return ((heads(codebook, X) - fetched) ** 2).sum(-1)


def reference_scores(clf, X_trained, X):
    """The classifier's score, slowly: cell log-probabilities minus relative distances."""
    codebook = clf.codebook_
    usage = clf.key_usage_
    n_codebooks, n_keys = usage.shape
    a, n = clf.count_smoothing, usage[0].sum()
    fetched = usage[np.arange(n_codebooks), codebook.transform(X)]
    mean = distances_to_codes(codebook, X_trained).mean(0)
    terms = np.log((fetched + a) / (n + a * n_keys)) - distances_to_codes(codebook, X) / mean
    return terms.mean(1)


# ------------------------------------------------------------ KeyCodebook


def test_codebook_score_is_minus_the_mean_squared_distance_to_the_nearest_keys():
    codebook = small_codebook().fit(BLOB_A)
    X = np.vstack([BLOB_A[:50], BLOB_B[:50]])
    scores = codebook.score_samples(X)
    assert isinstance(scores, np.ndarray) and scores.shape == (100,)
    assert scores.dtype == np.float64
    all_keys = codebook.keys_.astype(np.float64)
    nearest = ((heads(codebook, X)[:, :, None] - all_keys[None]) ** 2).sum(-1).min(-1)
    np.testing.assert_allclose(scores, -nearest.mean(1), rtol=1e-4, atol=1e-5)


def test_codebook_scores_a_shifted_input_lower():
    codebook = small_codebook().fit(BLOB_A)
    typical = codebook.score_samples(BLOB_A[:100])
    shifted = codebook.score_samples(BLOB_A[:100] + 5.0)
    assert np.all(typical <= 0)
    assert np.median(typical) > shifted.max()


def test_codebook_score_of_a_sample_does_not_depend_on_its_batch():
    codebook = small_codebook().fit(BLOB_A)
    X = np.vstack([BLOB_A, BLOB_B])
    scores = codebook.score_samples(X)
    np.testing.assert_array_equal(scores[300:310], codebook.score_samples(X[300:310]))
    np.testing.assert_array_equal(codebook.score_samples(sp.csr_matrix(X)), scores)


def test_codebook_score_checks_its_input():
    with pytest.raises(NotFittedError):
        small_codebook().score_samples(BLOB_A)
    codebook = small_codebook().fit(BLOB_A)
    with pytest.raises(ValueError, match="features"):
        codebook.score_samples(BLOB_A[:, :3])


# ------------------------------------------------------------ classifier


@pytest.fixture(scope="module")
def trained():
    return KeyValueBottleneckClassifier(codebook=KEYS, random_state=0).fit(BLOB_A, Y_A)


def test_classifier_score_equals_a_slow_reference(trained):
    X = np.vstack([BLOB_A[:60], BLOB_B[:60], BLOB_A[:5] + 10.0])
    scores = trained.score_samples(X)
    assert isinstance(scores, np.ndarray) and scores.shape == (125,)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, reference_scores(trained, BLOB_A, X), rtol=1e-5)


def test_inputs_in_cells_no_training_sample_reached_score_lower(trained):
    """Blob B is as close to the keys as blob A, but training never fetched its keys."""
    codebook_scores = KEYS.score_samples(BLOB_B[:100]), KEYS.score_samples(BLOB_A[:100])
    assert abs(np.median(codebook_scores[0]) - np.median(codebook_scores[1])) < 0.5
    in_distribution = trained.score_samples(BLOB_A[:100])
    unseen = trained.score_samples(BLOB_B[:100])
    assert np.percentile(in_distribution, 5) > np.percentile(unseen, 95)


def test_inputs_far_from_every_key_score_lower():
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0)
    clf.fit(BLOB_A, Y_A)  # keys fitted on the training inputs: every cell is used
    in_distribution = clf.score_samples(BLOB_A[:100])
    shifted = clf.score_samples(BLOB_A[:100] * 3.0)
    assert np.median(in_distribution) > np.percentile(shifted, 90)


def test_score_does_not_depend_on_the_value_rule(trained):
    sgd = KeyValueBottleneckClassifier(codebook=KEYS, value_update="sgd", max_iter=2)
    sgd.fit(BLOB_A, Y_A)
    X = np.vstack([BLOB_A[:20], BLOB_B[:20]])
    np.testing.assert_array_equal(sgd.score_samples(X), trained.score_samples(X))


def test_score_is_the_same_for_a_stream_in_any_order(trained):
    order = np.random.RandomState(1).permutation(len(Y_A))
    clf = KeyValueBottleneckClassifier(codebook=KEYS)
    for batch in np.array_split(order, 5):
        clf.partial_fit(BLOB_A[batch], Y_A[batch])
    X = np.vstack([BLOB_A[:50], BLOB_B[:50]])
    np.testing.assert_array_equal(clf.key_usage_, trained.key_usage_)
    np.testing.assert_allclose(clf.score_samples(X), trained.score_samples(X), rtol=1e-12)


def test_samples_of_zero_weight_do_not_count():
    weights = np.r_[np.ones(len(Y_A)), np.zeros(100)]
    X = np.vstack([BLOB_A, BLOB_B[:100]])
    y = np.r_[Y_A, np.zeros(100, dtype=int)]
    with_zeros = KeyValueBottleneckClassifier(codebook=KEYS).fit(X, y, sample_weight=weights)
    without = KeyValueBottleneckClassifier(codebook=KEYS).fit(BLOB_A, Y_A)
    np.testing.assert_allclose(with_zeros.score_samples(X), without.score_samples(X), rtol=1e-12)


def test_unlearning_takes_samples_out_of_the_score(trained):
    clf = KeyValueBottleneckClassifier(codebook=KEYS).fit(BLOB_A, Y_A)
    clf.unlearn(BLOB_A[200:], Y_A[200:])
    never = KeyValueBottleneckClassifier(codebook=KEYS).fit(BLOB_A[:200], Y_A[:200])
    X = np.vstack([BLOB_A[:50], BLOB_B[:50]])
    np.testing.assert_allclose(clf.score_samples(X), never.score_samples(X), rtol=1e-12)


def test_a_model_of_no_positive_weight_scores_every_input_alike():
    clf = KeyValueBottleneckClassifier(codebook=KEYS)
    clf.partial_fit(BLOB_A[:20], Y_A[:20], sample_weight=np.zeros(20))
    scores = clf.score_samples(np.vstack([BLOB_A[:10], BLOB_B[:10] + 10.0]))
    np.testing.assert_array_equal(scores, np.log(1 / 16))


@pytest.mark.parametrize("exponent", [70, -70])
def test_scores_of_inputs_scaled_by_a_power_of_two(exponent):
    """Squared distances beyond float32's range (2**140, 2**-140) stay exact: the
    codebook's score scales by the square, the classifier's does not change."""
    scale = 2.0**exponent
    reference = KeyValueBottleneckClassifier(codebook=small_codebook()).fit(BLOB_A, Y_A)
    scaled = KeyValueBottleneckClassifier(codebook=small_codebook()).fit(BLOB_A * scale, Y_A)
    X = np.vstack([BLOB_A[:20], BLOB_B[:20]])
    np.testing.assert_array_equal(scaled.score_samples(X * scale), reference.score_samples(X))
    np.testing.assert_array_equal(
        scaled.codebook_.score_samples(X * scale), reference.codebook_.score_samples(X) * scale**2
    )


def test_classifier_score_checks_its_input_and_leaves_the_model_untouched(trained):
    with pytest.raises(NotFittedError):
        KeyValueBottleneckClassifier(codebook=KEYS).score_samples(BLOB_A)
    before = fingerprint(trained)
    with pytest.raises(ValueError, match="features"):
        trained.score_samples(BLOB_A[:, :3])
    trained.set_params(count_smoothing=-1.0)
    try:
        with pytest.raises(InvalidParameterError, match="count_smoothing"):
            trained.score_samples(BLOB_A[:3])
    finally:
        trained.set_params(count_smoothing=0.1)
    assert fingerprint(trained) == before
