"""skkvb.metrics: continual-learning metrics on hand-computed matrices, prequential scoring."""

import math
from typing import ClassVar

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score

from skkvb.bench import NearestClassMean
from skkvb.metrics import (
    accuracy_matrix,
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    prequential_score,
)

METRICS = [average_accuracy, average_incremental_accuracy, forgetting, backward_transfer]

# Three phases. Row i: accuracies on the test data of phases 0, 1, 2 after phase i.
R3 = [
    [0.9, 0.1, 0.0],
    [0.7, 0.8, 0.2],
    [0.5, 0.6, 1.0],
]


def test_average_accuracy_is_the_mean_of_the_last_row():
    # (0.5 + 0.6 + 1.0) / 3 = 2.1 / 3 = 0.7
    assert average_accuracy(R3) == pytest.approx(0.7)


def test_average_incremental_accuracy_averages_the_seen_phases_of_each_row():
    # row 0: 0.9; row 1: (0.7 + 0.8) / 2 = 0.75; row 2: (0.5 + 0.6 + 1.0) / 3 = 0.7
    # (0.9 + 0.75 + 0.7) / 3 = 2.35 / 3
    assert average_incremental_accuracy(R3) == pytest.approx(2.35 / 3)


def test_forgetting_is_the_drop_from_the_best_earlier_accuracy():
    # phase 0: max(0.9, 0.7) - 0.5 = 0.4; phase 1: max(0.1, 0.8) - 0.6 = 0.2
    # (0.4 + 0.2) / 2 = 0.3
    assert forgetting(R3) == pytest.approx(0.3)


def test_forgetting_takes_the_best_row_not_the_diagonal():
    # phase 0 peaks after phase 1: max(0.5, 0.9) - 0.6 = 0.3; phase 1: max(0.0, 0.7) - 0.7 = 0
    # (0.3 + 0.0) / 2 = 0.15
    R = [[0.5, 0.0, 0.0], [0.9, 0.7, 0.0], [0.6, 0.7, 0.8]]
    assert forgetting(R) == pytest.approx(0.15)


def test_backward_transfer_compares_the_last_row_with_the_diagonal():
    # phase 0: 0.5 - 0.9 = -0.4; phase 1: 0.6 - 0.8 = -0.2; (-0.4 - 0.2) / 2 = -0.3
    assert backward_transfer(R3) == pytest.approx(-0.3)
    # Positive transfer: phase 0 improves from 0.5 to 0.75, +0.25 over one phase.
    assert backward_transfer([[0.5, 0.0], [0.75, 0.9]]) == pytest.approx(0.25)
    # ...and forgetting can be negative then: max(0.5) - 0.75 = -0.25
    assert forgetting([[0.5, 0.0], [0.75, 0.9]]) == pytest.approx(-0.25)


def test_a_single_phase():
    assert average_accuracy([[0.8]]) == pytest.approx(0.8)
    assert average_incremental_accuracy([[0.8]]) == pytest.approx(0.8)
    assert math.isnan(forgetting([[0.8]]))
    assert math.isnan(backward_transfer([[0.8]]))


def test_metrics_return_python_floats():
    for metric in METRICS:
        assert type(metric(np.array(R3))) is float


def test_accuracy_matrix_from_labels_and_predictions():
    y_true = [[0, 0, 0, 0], [1, 1]]
    y_pred = [
        [[0, 0, 0, 0], [0, 0]],  # after phase 0: 4/4 on phase 0, 0/2 on phase 1
        [[0, 1, 1, 1], [1, 0]],  # after phase 1: 1/4 on phase 0, 1/2 on phase 1
    ]
    R = accuracy_matrix(y_true, y_pred)
    np.testing.assert_allclose(R, [[1.0, 0.0], [0.25, 0.5]])
    # forgetting: 1.0 - 0.25 = 0.75; backward transfer: 0.25 - 1.0 = -0.75
    assert forgetting(R) == pytest.approx(0.75)
    assert backward_transfer(R) == pytest.approx(-0.75)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        ([], [], "y_true"),
        ([[0], [1]], [[[0], [1]]], r"y_pred must hold one row per phase \(2\)"),
        ([[0], [1]], [[[0], [1]], [[0]]], r"y_pred\[1\]"),
        ([[0], [1]], [[[0], [1]], [[0], [1, 1]]], r"y_pred\[1\]\[1\]"),
        ([[]], [[[]]], r"y_pred\[0\]\[0\]"),
    ],
)
def test_accuracy_matrix_validation(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        accuracy_matrix(y_true, y_pred)


@pytest.mark.parametrize("metric", METRICS, ids=lambda metric: metric.__name__)
@pytest.mark.parametrize(
    ("R", "match"),
    [
        ([0.5, 0.5], "R must be 2-D"),
        ([[[0.5]]], "R must be 2-D"),
        ([[0.5, 0.5]], "R must be square"),
        (np.zeros((0, 0)), "R must hold at least one phase"),
        ([[1.5]], r"R must hold accuracies in \[0, 1\]"),
        ([[-0.1]], r"R must hold accuracies in \[0, 1\]"),
        ([[0.5, 0.0], [np.nan, 0.5]], r"R must hold accuracies in \[0, 1\]"),
        ([["a"]], "R must be an array of accuracies"),
    ],
)
def test_accuracy_matrix_validation_names_the_argument(metric, R, match):
    with pytest.raises(ValueError, match=match):
        metric(R)


class _Recorder(NearestClassMean):
    """NCM that logs, in order, which batches it predicted and which it learnt."""

    log: ClassVar[list] = []

    def predict(self, X):
        type(self).log.append(("predict", float(X[0, 0])))
        return super().predict(X)

    def partial_fit(self, X, y, classes=None):
        type(self).log.append(("fit", float(X[0, 0])))
        return super().partial_fit(X, y, classes=classes)


def _batches():
    """Three batches, one feature; the batch's index is in X[0, 0] (its first sample)."""
    X0, y0 = np.array([[0.0], [0.2], [10.0]]), np.array([0, 0, 1])
    X1, y1 = np.array([[1.0], [0.1], [10.1], [5.0]]), np.array([0, 0, 1, 2])
    X2, y2 = np.array([[2.0], [5.1]]), np.array([0, 2])
    return [(X0, y0), (X1, y1), (X2, y2)]


def test_prequential_is_test_then_train():
    _Recorder.log = []
    result = prequential_score(_Recorder(), _batches())
    # The first batch is only learnt; every later one is predicted, then learnt.
    assert _Recorder.log == [
        ("fit", 0.0),
        ("predict", 1.0),
        ("fit", 1.0),
        ("predict", 2.0),
        ("fit", 2.0),
    ]
    # Batch 1 before it is learnt: means 0 -> 0.1, 1 -> 10; 1.0, 0.1 and 10.1 right,
    # 5.0 (class 2, never seen) predicted 0: 3/4. Batch 2 after batch 1: class 2's mean
    # is 5.0, so 2.0 -> 0 and 5.1 -> 2: 2/2.
    np.testing.assert_array_equal(result["scores"], [np.nan, 0.75, 1.0])
    np.testing.assert_array_equal(result["n_samples"], [3, 4, 2])
    # Weighted by batch size, the first batch left out: (4 * 0.75 + 2 * 1.0) / 6 = 5 / 6
    assert result["score"] == pytest.approx(5 / 6)


def test_prequential_scores_with_the_model_from_before_the_batch():
    # The same batch twice: the first time it is new, so unseen class 1 counts as errors.
    X, y = np.array([[0.0], [1.0]]), np.array([0, 1])
    result = prequential_score(NearestClassMean(), [(X[:1], y[:1]), (X, y), (X, y)])
    # batch 1: class 0 right, class 1 (never seen) wrong: 1/2; batch 2: both known: 2/2
    np.testing.assert_array_equal(result["scores"], [np.nan, 0.5, 1.0])
    assert result["score"] == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)


def test_prequential_with_sgd_passes_classes_once_and_takes_a_generator():
    rng = np.random.RandomState(0)

    def stream():
        for _ in range(5):
            X = rng.normal(size=(20, 2))
            yield X, (X[:, 0] > 0).astype(int)

    clf = SGDClassifier(random_state=0)
    result = prequential_score(clf, stream(), classes=[0, 1])
    assert result["scores"].shape == (5,) and np.isnan(result["scores"][0])
    assert np.all(result["scores"][1:] >= 0.5)
    assert result["score"] == pytest.approx(np.mean(result["scores"][1:]))
    np.testing.assert_array_equal(clf.classes_, [0, 1])


def test_prequential_skips_batches_while_the_estimator_is_not_fitted():
    _Recorder.log = []
    X, y = np.array([[0.0], [1.0]]), np.array([0, 1])
    result = prequential_score(_Recorder(), [(X, y)])
    assert _Recorder.log == [("fit", 0.0)]
    assert np.isnan(result["scores"]).all() and math.isnan(result["score"])


def test_prequential_custom_scoring_and_empty_stream():
    X, y = np.array([[0.0], [1.0]]), np.array([0, 1])

    def errors(y_true, y_pred):
        return 1.0 - accuracy_score(y_true, y_pred)

    result = prequential_score(NearestClassMean(), [(X, y), (X, y)], scoring=errors)
    np.testing.assert_array_equal(result["scores"], [np.nan, 0.0])
    with pytest.raises(ValueError, match="batches"):
        prequential_score(NearestClassMean(), [])
