"""Continual-learning metrics: what a learner knows, and keeps, along a stream.

Most metrics here read an *accuracy matrix* ``R`` of shape
``(n_phases, n_phases)``: ``R[i, j]`` is the accuracy on the test data of
phase ``j`` after training through phase ``i`` (the convention of Lopez-Paz &
Ranzato [1]_ and Chaudhry et al. [2]_; average incremental accuracy is from
Rebuffi et al. [3]_). :func:`accuracy_matrix` builds it
from labels and predictions. Entries above the diagonal (phases not trained
yet) are allowed but ignored by every metric except :func:`average_accuracy`'s
last row, which has none.

:func:`prequential_score` evaluates a learner on a stream of batches without a
held-out set: every batch is first predicted, then learned (test-then-train).

:func:`expected_calibration_error` measures how far the confidence of predicted
probabilities is from the accuracy they reach.

References
----------
.. [1] D. Lopez-Paz and M. Ranzato, "Gradient Episodic Memory for Continual
   Learning", NeurIPS 2017.
.. [2] A. Chaudhry, P. K. Dokania, T. Ajanthan and P. H. S. Torr, "Riemannian
   Walk for Incremental Learning: Understanding Forgetting and
   Intransigence", ECCV 2018.
.. [3] S.-A. Rebuffi, A. Kolesnikov, G. Sperl and C. H. Lampert, "iCaRL:
   Incremental Classifier and Representation Learning", CVPR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score

from ._typing import ArrayLike
from ._validation import is_fitted

__all__ = [
    "accuracy_matrix",
    "average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "expected_calibration_error",
    "forgetting",
    "prequential_score",
]


_DOC_SECTIONS = {
    "parameters": """Parameters
----------
R : array-like of shape (n_phases, n_phases)
    ``R[i, j]``: accuracy on phase ``j``'s test data after phase ``i``.
""",
    "references": """References
----------
.. [1] D. Lopez-Paz and M. Ranzato, "Gradient Episodic Memory for
   Continual Learning", NeurIPS 2017.
.. [2] A. Chaudhry, P. K. Dokania, T. Ajanthan and P. H. S. Torr, "Riemannian
   Walk for Incremental Learning: Understanding Forgetting and
   Intransigence", ECCV 2018.
""",
}


def _fill_doc(func):
    """Put the sections shared by the metrics of ``R`` in place of ``{name}`` lines."""
    for name, text in _DOC_SECTIONS.items() if func.__doc__ else ():
        indented = text.rstrip("\n").replace("\n", "\n    ")
        func.__doc__ = func.__doc__.replace("{" + name + "}", indented)
    return func


def _check_accuracy_matrix(R, name="R"):
    """``R`` as a float array, or a ValueError naming ``name``."""
    try:
        R = np.asarray(R, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of accuracies: {exc}") from exc
    if R.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_phases, n_phases), got {R.ndim}-D.")
    if R.shape[0] != R.shape[1]:
        raise ValueError(f"{name} must be square (n_phases, n_phases), got shape {R.shape}.")
    if R.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one phase, got shape {R.shape}.")
    if not np.all((R >= 0.0) & (R <= 1.0)):  # False for NaN too
        raise ValueError(f"{name} must hold accuracies in [0, 1] (no NaN).")
    return R


def _mean_forgetting(accuracy, columns):
    """Mean over ``columns`` of the best accuracy before the last row minus the last.

    The kernel of :func:`forgetting`; ``accuracy`` has one row per phase and
    may have more columns than rows (one per class, say), and NaN entries
    before the last row are ignored.
    """
    best = np.nanmax(accuracy[:-1, columns], axis=0)
    return float(np.mean(best - accuracy[-1, columns]))


@_fill_doc
def accuracy_matrix(
    y_true: Sequence[ArrayLike], y_pred: Sequence[Sequence[ArrayLike]]
) -> np.ndarray:
    """The accuracy matrix ``R`` of a stream, from labels and predictions.

    Parameters
    ----------
    y_true : sequence of n_phases array-likes
        ``y_true[j]``: the test labels of phase ``j``.
    y_pred : sequence of n_phases sequences of n_phases array-likes
        ``y_pred[i][j]``: the predictions on phase ``j``'s test data after
        training through phase ``i``, of the same length as ``y_true[j]``.

    Returns
    -------
    R : ndarray of shape (n_phases, n_phases)
        ``R[i, j]``: the accuracy of ``y_pred[i][j]`` against ``y_true[j]``.

    See Also
    --------
    average_accuracy, average_incremental_accuracy, forgetting, backward_transfer

    {references}

    Examples
    --------
    >>> from skkvb.metrics import accuracy_matrix
    >>> y_true = [[0, 0], [1, 1]]
    >>> y_pred = [[[0, 0], [0, 0]],   # after phase 0
    ...           [[0, 1], [1, 1]]]   # after phase 1
    >>> accuracy_matrix(y_true, y_pred)
    array([[1. , 0. ],
           [0.5, 1. ]])
    """
    n_phases = len(y_true)
    if n_phases < 1:
        raise ValueError("y_true must hold the test labels of at least one phase.")
    if len(y_pred) != n_phases:
        raise ValueError(
            f"y_pred must hold one row per phase ({n_phases}), got {len(y_pred)}."
        )
    R = np.empty((n_phases, n_phases))
    for i, row in enumerate(y_pred):
        if len(row) != n_phases:
            raise ValueError(
                f"y_pred[{i}] must hold predictions for each of the {n_phases} phases, "
                f"got {len(row)}."
            )
        for j, (labels, predicted) in enumerate(zip(y_true, row)):
            labels, predicted = np.asarray(labels), np.asarray(predicted)
            if labels.shape != predicted.shape or labels.size == 0:
                raise ValueError(
                    f"y_pred[{i}][{j}] (shape {predicted.shape}) must match the non-empty "
                    f"y_true[{j}] (shape {labels.shape})."
                )
            R[i, j] = np.mean(labels == predicted)
    return R


@_fill_doc
def average_accuracy(R: ArrayLike) -> float:
    """Average accuracy at the end of the stream, :math:`A_T`: the mean of ``R``'s last row.

    {parameters}

    Returns
    -------
    A_T : float
        The final accuracy, each phase's test data weighing the same.

    {references}

    Examples
    --------
    >>> from skkvb.metrics import average_accuracy
    >>> average_accuracy([[0.9, 0.0], [0.6, 0.8]])
    0.7
    """
    R = _check_accuracy_matrix(R)
    return float(np.mean(R[-1]))


@_fill_doc
def average_incremental_accuracy(R: ArrayLike) -> float:
    """Mean over phases of the average accuracy on the phases seen so far.

    The mean over ``i`` of ``mean(R[i, :i + 1])`` (S.-A. Rebuffi et al., "iCaRL:
    Incremental Classifier and Representation Learning", CVPR 2017). Each
    phase weighs the same, whatever its number of test samples.

    {parameters}

    Returns
    -------
    accuracy : float
        The area under the curve of the accuracy on the phases seen so far,
        over its number of points.

    {references}

    Examples
    --------
    >>> from skkvb.metrics import average_incremental_accuracy
    >>> average_incremental_accuracy([[0.9, 0.0], [0.6, 0.8]])  # (0.9 + 0.7) / 2
    0.8
    """
    R = _check_accuracy_matrix(R)
    return float(np.mean([np.mean(R[i, : i + 1]) for i in range(len(R))]))


@_fill_doc
def forgetting(R: ArrayLike) -> float:
    """Average forgetting (Chaudhry et al., 2018).

    For every phase ``j`` before the last, its best accuracy after any phase
    before the last, ``max(R[:T - 1, j])``, minus its final accuracy
    ``R[T - 1, j]``; averaged over those ``T - 1`` phases. Positive when the
    learner lost what it knew; can be negative.

    {parameters}

    Returns
    -------
    forgetting : float
        Between -1 and 1; NaN for a single phase (nothing to forget).

    {references}

    Examples
    --------
    >>> from skkvb.metrics import forgetting
    >>> round(forgetting([[0.9, 0.0], [0.6, 0.8]]), 2)  # 0.9 - 0.6
    0.3
    """
    R = _check_accuracy_matrix(R)
    if len(R) < 2:
        return math.nan
    return _mean_forgetting(R, np.arange(len(R) - 1))


@_fill_doc
def backward_transfer(R: ArrayLike) -> float:
    """Backward transfer, BWT (Lopez-Paz & Ranzato, 2017).

    The mean over phases ``j`` before the last of ``R[T - 1, j] - R[j, j]``:
    how learning later phases changed the accuracy on earlier ones right after
    they were learnt. Negative when the learner forgets.

    {parameters}

    Returns
    -------
    bwt : float
        Between -1 and 1, 0 without any change; NaN for a single phase.

    {references}

    Examples
    --------
    >>> from skkvb.metrics import backward_transfer
    >>> round(backward_transfer([[0.9, 0.0], [0.6, 0.8]]), 2)  # 0.6 - 0.9
    -0.3
    """
    R = _check_accuracy_matrix(R)
    if len(R) < 2:
        return math.nan
    earlier = np.arange(len(R) - 1)
    return float(np.mean(R[-1, earlier] - R[earlier, earlier]))


def prequential_score(
    estimator: Any,
    batches: Iterable[tuple[Any, ArrayLike]],
    scoring: Callable[[Any, Any], float] = accuracy_score,
    classes: ArrayLike | None = None,
) -> dict[str, Any]:
    """Test-then-train evaluation over a stream of batches.

    Every batch is first scored with the estimator as it stands, then learnt
    with ``partial_fit``. The first batch is never scored (there is nothing to
    score yet), nor is any batch while the estimator is not fitted. A batch's
    score therefore always comes from a model that has not seen it.

    Labels never seen before are predicted wrong (the estimator cannot
    predict a class it does not know, unless ``classes`` announced it), so
    they count as errors, as they would in deployment; they are learnt right
    after.

    Parameters
    ----------
    estimator : estimator with ``partial_fit`` and ``predict``
        Trained in place.
    batches : iterable of (X, y)
        The stream, in order; a generator is consumed once.
    scoring : callable, default=sklearn.metrics.accuracy_score
        ``scoring(y_true, y_pred) -> float``.
    classes : array-like or None, default=None
        Passed to the first ``partial_fit`` call when given (required by
        estimators such as :class:`~sklearn.linear_model.SGDClassifier`).

    Returns
    -------
    result : dict
        ``scores``: ndarray of shape (n_batches,), each batch's score, NaN for
        a batch not scored; ``n_samples``: ndarray of shape (n_batches,), the
        batch sizes; ``score``: the mean of the scores weighted by batch size
        (NaN if no batch was scored).

    References
    ----------
    .. [1] J. Gama, R. Sebastião and P. P. Rodrigues, "On evaluating stream
       learning algorithms", Machine Learning 90, 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from skkvb.bench import NearestClassMean
    >>> from skkvb.metrics import prequential_score
    >>> X = np.array([[0.0], [0.1], [1.0], [1.1], [0.05], [1.05]])
    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> batches = [(X[:2], y[:2]), (X[2:4], y[2:4]), (X[4:], y[4:])]
    >>> result = prequential_score(NearestClassMean(), batches)
    >>> result["scores"]  # class 1 was new in batch 1
    array([nan,  0.,  1.])
    >>> result["score"]
    0.5
    """
    scores, n_samples = [], []
    kwargs = {} if classes is None else {"classes": classes}
    for X, y in batches:
        n_samples.append(len(y))
        if scores and is_fitted(estimator):
            scores.append(float(scoring(y, estimator.predict(X))))
        else:
            scores.append(math.nan)
        estimator.partial_fit(X, y, **kwargs)
        kwargs = {}
    if not scores:
        raise ValueError("batches must hold at least one (X, y) batch.")
    scores, n_samples = np.array(scores), np.array(n_samples)
    scored = ~np.isnan(scores)
    if not scored.any() or n_samples[scored].sum() == 0:
        score = math.nan
    else:
        score = float(np.average(scores[scored], weights=n_samples[scored]))
    return {"scores": scores, "n_samples": n_samples, "score": score}


def expected_calibration_error(
    y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 15, labels: ArrayLike | None = None
) -> float:
    """Expected calibration error (ECE) of predicted class probabilities.

    Samples are put in ``n_bins`` equal-width bins of their confidence, the
    largest of their probabilities (bin ``b`` holds confidences in
    ``(b / n_bins, (b + 1) / n_bins]``, the first one 0 too). The ECE is the
    mean over bins, weighted by their share of the samples, of the gap between
    the bin's accuracy and its mean confidence, as in Guo et al. [1]_ (who use
    15 bins). 0 is perfect; a classifier whose confidence is always 1 scores
    its error rate.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities, one column per label of ``labels``.
    n_bins : int, default=15
        Number of confidence bins.
    labels : array-like of shape (n_classes,), default=None
        The label of each column of ``y_proba`` (a classifier's
        ``classes_``); ``None`` means the sorted labels of ``y_true``.

    Returns
    -------
    ece : float
        In [0, 1].

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, "On Calibration of
       Modern Neural Networks", ICML 2017.

    Examples
    --------
    >>> from skkvb.metrics import expected_calibration_error
    >>> y_proba = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    >>> round(expected_calibration_error([0, 0, 1, 1], y_proba, n_bins=5), 3)
    0.3
    """
    y_true = np.asarray(y_true)
    y_proba = np.asarray(y_proba, dtype=float)
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    if y_proba.ndim != 2 or y_proba.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"y_proba must have shape (n_samples, n_classes) with n_samples={len(y_true)}; "
            f"got {y_proba.shape}."
        )
    if y_proba.shape[1] != len(labels):
        raise ValueError(
            f"y_proba has {y_proba.shape[1]} columns but there are {len(labels)} labels; "
            "pass labels= (e.g. the classifier's classes_)."
        )
    if not (isinstance(n_bins, int) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    if len(y_true) == 0:
        raise ValueError("y_true is empty: the calibration error needs samples.")
    confidence = y_proba.max(1)
    correct = labels[y_proba.argmax(1)] == y_true
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = np.bincount(bins, weights=correct - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / len(y_true))
