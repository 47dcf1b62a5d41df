"""Train an estimator through a stream of phases and measure what it keeps.

:func:`run_stream` is the benchmark's inner loop: any estimator with
``partial_fit`` is trained phase after phase, a number of epochs each, and
evaluated on the *full* test set (every class, seen or not) at a fixed
cadence. Metrics follow the continual-learning literature:

- accuracy and mean per-class accuracy (the DKVB paper's metric) at the end;
- average incremental accuracy (Rebuffi et al., iCaRL): the mean over phases
  of the accuracy, at the end of each phase, on the test samples of the
  classes seen so far;
- forgetting (Chaudhry et al., 2018): for every class seen before the last
  phase, its best accuracy at the end of an earlier phase minus its final
  accuracy, averaged over those classes (:func:`skkvb.metrics.forgetting`,
  per class). Undefined (NaN) for one phase.
"""

import math
from time import perf_counter

import numpy as np

from ..metrics import _mean_forgetting

__all__ = ["run_stream", "per_class_accuracy", "forgetting", "epoch_chunks"]


def per_class_accuracy(y_true, y_pred, classes):
    """Recall of each class in ``classes`` (NaN for a class absent from ``y_true``)."""
    correct = y_true == y_pred
    out = np.full(len(classes), np.nan)
    for i, label in enumerate(classes):
        mask = y_true == label
        if mask.any():
            out[i] = correct[mask].mean()
    return out


def forgetting(class_accuracy_at_phase_end, first_phase):
    """Average drop from each old class's best earlier accuracy to its final one.

    :func:`skkvb.metrics.forgetting` with classes for tasks: the accuracy
    matrix has a column per class, and each class counts from its phase.

    Parameters
    ----------
    class_accuracy_at_phase_end : ndarray of shape (n_phases, n_classes)
        Per-class test accuracy at the end of every phase.
    first_phase : ndarray of shape (n_classes,)
        The phase in which each class arrived (a large value if never).

    Returns
    -------
    forgetting : float
        NaN with fewer than two phases or no class before the last phase.
    """
    accuracy = np.asarray(class_accuracy_at_phase_end, dtype=float)
    n_phases = len(accuracy)
    old = np.asarray(first_phase) < n_phases - 1
    old &= ~np.isnan(accuracy[-1])
    if n_phases < 2 or not old.any():
        return math.nan
    return _mean_forgetting(accuracy, old)


def epoch_chunks(epochs, eval_every):
    """Split a phase's ``epochs`` into runs of ``eval_every`` (the last may be shorter)."""
    if eval_every is None or eval_every >= epochs:
        return [epochs]
    full, rest = divmod(epochs, eval_every)
    return [eval_every] * full + ([rest] if rest else [])


def _train(estimator, X, y, n_epochs, single_pass, classes):
    kwargs = {} if classes is None else {"classes": classes}
    if single_pass:
        estimator.partial_fit(X, y, **kwargs)
    elif "partial_fit_max_iter" in estimator.get_params():
        # One call, several epochs: the estimator computes what it needs of X once.
        estimator.set_params(partial_fit_max_iter=n_epochs)
        estimator.partial_fit(X, y, **kwargs)
    else:
        for _ in range(n_epochs):
            estimator.partial_fit(X, y, **kwargs)
            kwargs = {}


def run_stream(
    estimator,
    phases,
    X_test,
    y_test,
    *,
    epochs=1,
    eval_every=None,
    single_pass=False,
    classes=None,
    on_eval=None,
):
    """Train ``estimator`` through ``phases`` and evaluate it along the way.

    Parameters
    ----------
    estimator : estimator with ``partial_fit`` and ``predict``
        Trained in place. An estimator with a ``partial_fit_max_iter`` parameter
        (such as :class:`skkvb.KeyValueBottleneckClassifier`) gets one call per
        evaluation interval, with that many epochs; others get one call per
        epoch.
    phases : list of (X, y)
        The stream, in order (see :func:`skkvb.streams.make_phases`).
    X_test, y_test : ndarray
        The full test set, evaluated after every ``eval_every`` epochs and at
        the end of every phase.
    epochs : int, default=1
        Epochs per phase.
    eval_every : int or None, default=None
        Evaluation interval in epochs; ``None`` evaluates at phase ends only.
    single_pass : bool, default=False
        The estimator keeps exact statistics (one ``partial_fit`` per phase is
        all it needs; more would count samples twice): train once per phase
        and evaluate at its end.
    classes : array-like or None, default=None
        Passed to the first ``partial_fit`` call; ``None`` lets the label set
        grow as classes arrive.
    on_eval : callable or None, default=None
        Called with each point of the learning curve (a dict), for progress.

    Returns
    -------
    result : dict
        ``accuracy``, ``mean_class_accuracy``, ``average_incremental_accuracy``,
        ``forgetting``, ``fit_time`` and ``eval_time`` (seconds), the learning
        ``curve`` (one dict per evaluation: ``epoch``, ``phase``,
        ``accuracy``, ``mean_class_accuracy``) and ``class_accuracy`` (per
        class of ``test_classes``, at each phase end).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skkvb.bench import NearestClassMean
    >>> from skkvb.bench._runner import run_stream
    >>> from skkvb.streams import ClassIncrementalSplit, make_phases
    >>> X, y = load_iris(return_X_y=True)
    >>> phases = make_phases(X, y, ClassIncrementalSplit(3, random_state=0))
    >>> result = run_stream(NearestClassMean(), phases, X, y, single_pass=True)
    >>> round(result["accuracy"], 2), round(result["forgetting"], 2)
    (0.93, 0.07)
    """
    y_test = np.asarray(y_test)
    test_classes = np.unique(y_test)
    first_phase = np.full(len(test_classes), len(phases))
    curve, class_accuracy, seen_accuracy = [], [], []
    fit_time = eval_time = 0.0
    epoch = 0
    pending_classes = classes
    for phase, (X_phase, y_phase) in enumerate(phases):
        arrived = np.isin(test_classes, y_phase)
        first_phase[arrived & (first_phase > phase)] = phase
        for n_epochs in [epochs] if single_pass else epoch_chunks(epochs, eval_every):
            start = perf_counter()
            _train(estimator, X_phase, y_phase, n_epochs, single_pass, pending_classes)
            pending_classes = None
            fit_time += perf_counter() - start
            epoch += n_epochs
            start = perf_counter()
            y_pred = estimator.predict(X_test)
            eval_time += perf_counter() - start
            per_class = per_class_accuracy(y_test, y_pred, test_classes)
            point = {
                "epoch": epoch,
                "phase": phase,
                "accuracy": float(np.mean(y_pred == y_test)),
                "mean_class_accuracy": float(np.nanmean(per_class)),
            }
            curve.append(point)
            if on_eval is not None:
                on_eval(point)
        class_accuracy.append(per_class)
        seen = np.isin(y_test, test_classes[first_phase <= phase])
        seen_accuracy.append(float(np.mean(y_pred[seen] == y_test[seen])) if seen.any() else 0.0)
    return {
        "accuracy": curve[-1]["accuracy"],
        "mean_class_accuracy": curve[-1]["mean_class_accuracy"],
        "average_incremental_accuracy": float(np.mean(seen_accuracy)),
        "forgetting": forgetting(class_accuracy, first_phase),
        "fit_time": fit_time,
        "eval_time": eval_time,
        "curve": curve,
        "test_classes": test_classes.tolist(),
        "class_accuracy": [row.tolist() for row in class_accuracy],
    }
