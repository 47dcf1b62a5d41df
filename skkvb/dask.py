"""Data-parallel training of counting values on dask arrays.

With ``value_update="count"`` a trained classifier is a sum over samples:
class counts, key usage, class totals, distance sums, and a calibration
sample that depends only on the set of points learned. :func:`fit` therefore
lets each worker encode and count its own blocks of rows, adds the small
per-block summaries up in a tree, and brings only the sum to the client: the
rows never leave the workers. dask stays an optional dependency: it is
imported when these functions are called.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, column_or_1d

from ._calibration import CalibrationSample
from ._compat import check_sample_weight
from ._dask import is_dask_array
from ._encoding import encode_array, head_distances_of_array
from ._labels import label_kind
from ._persistence import all_or_nothing
from ._validation import check_float32_range, is_fitted
from .engine.codes import count_usage, flat_codes

__all__ = ["fit", "predict", "predict_proba"]

# Block summaries added up by one task of the tree reduction.
SPLIT_EVERY = 8


def fit(estimator, X, y, sample_weight=None):
    """Fit a classifier with counting values on a dask array, block by block.

    Each block of rows is encoded and counted on the worker that holds it;
    only per-block summaries (class counts of the keys fetched, key usage,
    class totals, calibration points) travel, added up in a tree, and the
    client puts their sum into ``estimator`` in one step. The result is that
    of ``estimator.fit(X.compute(), y.compute(), sample_weight)`` (see Notes).

    Parameters
    ----------
    estimator : KeyValueBottleneckClassifier
        With ``value_update="count"`` and a fitted codebook, e.g.
        ``sklearn.frozen.FrozenEstimator(KeyCodebook(...).fit(sample))``:
        keys are not fitted on a dask array here. A fitted codebook is used as
        it is even outside ``FrozenEstimator`` (where ``fit`` would refit it).
    X : dask.array.Array of shape (n_samples, n_features)
        Training data, chunked along rows (column chunks are merged).
    y : dask.array.Array or array-like of shape (n_samples,)
        Class labels.
    sample_weight : dask.array.Array or array-like of shape (n_samples,), default=None
        Per-sample weights, finite and >= 0, not all zero; ``None`` means one.

    Returns
    -------
    estimator : KeyValueBottleneckClassifier
        The fitted estimator.

    Raises
    ------
    ValueError
        For SGD values, an unfitted codebook, a block whose feature count
        differs from the codebook's, and invalid labels or weights. Whatever
        raises, in a check or in a worker's block, the estimator is left as it
        was.

    Notes
    -----
    With integer weights (``None`` included) the class counts, ``key_usage_``,
    ``class_count_``, the calibration sample and so every prediction and
    probability equal the in-memory fit's bit for bit; ``score_samples`` reads
    float64 sums of distances, added in another order: equal up to rounding.
    Labels are the union over all blocks: a block may hold labels no other
    block has. Keys are computed on the workers' CPUs.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn.frozen import FrozenEstimator
    >>> import skkvb.dask
    >>> from skkvb import KeyCodebook, KeyValueBottleneckClassifier
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(600, 8)), rng.randint(3, size=600)
    >>> keys = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X[:100])
    >>> clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys))
    >>> clf = skkvb.dask.fit(clf, da.from_array(X, chunks=200), da.from_array(y, chunks=200))
    >>> in_memory = KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys)).fit(X, y)
    >>> bool(np.array_equal(clf.predict_proba(X), in_memory.predict_proba(X)))
    True
    """
    import dask
    import dask.array as da

    _check_estimator(estimator)
    if not is_dask_array(X) or X.ndim != 2:
        raise ValueError(
            f"X must be a 2-d dask.array.Array, got {type(X).__name__}; for in-memory data "
            "call estimator.fit."
        )
    codebook = estimator.codebook
    n_features = codebook.projection_.shape[0]
    if not np.isnan(X.shape[1]) and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but the codebook was fitted on {n_features} features."
        )
    if max(X.numblocks[1:]) > 1:
        X = X.rechunk({1: -1})
    y_blocks = _row_blocks(da.asarray(y), X, "y")
    weight_blocks = (
        [None] * X.numblocks[0]
        if sample_weight is None
        else _row_blocks(da.asarray(sample_weight), X, "sample_weight")
    )
    shipped = dask.delayed(codebook, traverse=False)  # sent to each worker once
    summaries = [
        dask.delayed(_summarise, pure=True)(block, labels, weights, shipped, index)
        for index, (block, labels, weights) in enumerate(
            zip(X.to_delayed().ravel(), y_blocks, weight_blocks)
        )
    ]
    while len(summaries) > 1:
        summaries = [
            dask.delayed(_combine, pure=True)(summaries[i : i + SPLIT_EVERY])
            for i in range(0, len(summaries), SPLIT_EVERY)
        ]
    (total,) = dask.compute(summaries[0])
    return _apply(estimator, n_features, total)


def predict(estimator, X):
    """``estimator.predict`` of each block of rows of a dask array, lazily.

    The fitted estimator enters the graph once, so a distributed scheduler
    sends it to each worker once.

    Parameters
    ----------
    estimator : fitted classifier
        Any fitted estimator with ``predict``.
    X : dask.array.Array of shape (n_samples, n_features)
        Input samples, chunked along rows.

    Returns
    -------
    y_pred : dask.array.Array of shape (n_samples,)
        Predicted labels, with the row chunks of X.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import skkvb.dask
    >>> from skkvb import KeyCodebook, KeyValueBottleneckClassifier
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(300, 8)), rng.randint(3, size=300)
    >>> codebook = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)
    >>> clf = KeyValueBottleneckClassifier(codebook=codebook).fit(X, y)
    >>> lazy = skkvb.dask.predict(clf, da.from_array(X, chunks=100))
    >>> bool(np.array_equal(lazy.compute(), clf.predict(X)))
    True
    """
    return _row_map(estimator, X, "predict", estimator.classes_.dtype, None)


def predict_proba(estimator, X):
    """``estimator.predict_proba`` of each block of rows of a dask array, lazily.

    Parameters
    ----------
    estimator : fitted classifier
        Any fitted classifier with ``predict_proba``.
    X : dask.array.Array of shape (n_samples, n_features)
        Input samples, chunked along rows.

    Returns
    -------
    proba : dask.array.Array of shape (n_samples, n_classes)
        Probabilities, with the row chunks of X.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import skkvb.dask
    >>> from skkvb import KeyCodebook, KeyValueBottleneckClassifier
    >>> rng = np.random.RandomState(0)
    >>> X, y = rng.normal(size=(300, 8)), rng.randint(3, size=300)
    >>> codebook = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)
    >>> clf = KeyValueBottleneckClassifier(codebook=codebook).fit(X, y)
    >>> lazy = skkvb.dask.predict_proba(clf, da.from_array(X, chunks=100))
    >>> bool(np.array_equal(lazy.compute(), clf.predict_proba(X)))
    True
    """
    return _row_map(estimator, X, "predict_proba", np.float64, len(estimator.classes_))


def _row_map(estimator, X, method, dtype, n_columns):
    import dask

    if max(X.numblocks[1:]) > 1:
        X = X.rechunk({1: -1})
    fitted = dask.delayed(estimator, traverse=False)
    one_column = n_columns is None
    return X.map_blocks(
        _call_block,
        fitted,
        method,
        dtype=dtype,
        chunks=(X.chunks[0],) if one_column else (X.chunks[0], (n_columns,)),
        drop_axis=[1] if one_column else None,
        meta=np.empty((0,) if one_column else (0, n_columns), dtype=dtype),
    )


def _call_block(block, estimator, method):
    return getattr(estimator, method)(block)


# ------------------------------------------------------------------ checks


def _check_estimator(estimator):
    estimator._validate_params()
    if estimator.value_update != "count":
        raise ValueError(
            f"skkvb.dask.fit adds up per-block counts and needs value_update='count', got "
            f"value_update={estimator.value_update!r}: SGD steps depend on the order of the "
            "samples and cannot be summed. Use counting values, or dask-ml's Incremental."
        )
    estimator._value_model_class()  # decoder and value_update go together
    codebook = estimator.codebook
    if codebook is None or not is_fitted(codebook):
        raise ValueError(
            "skkvb.dask.fit needs a fitted codebook: fit the keys first, e.g. on a sample "
            "that fits in memory, and pass codebook=FrozenEstimator(KeyCodebook(...)."
            "fit(sample)). Keys are not fitted on a dask array."
        )


def _row_blocks(v, X, name):
    """The delayed blocks of the 1-d dask array v, aligned with X's row blocks."""
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {v.shape}.")
    if not (np.isnan(v.shape[0]) or any(np.isnan(c) for c in X.chunks[0])):
        if v.shape[0] != X.shape[0]:
            raise ValueError(f"{name} has {v.shape[0]} samples, but X has {X.shape[0]}.")
        v = v.rechunk((X.chunks[0],))
    elif v.numblocks[0] != X.numblocks[0]:
        raise ValueError(
            f"X's row chunks are unknown and {name} has {v.numblocks[0]} blocks, X "
            f"{X.numblocks[0]}: give {name} the blocks of X."
        )
    return list(v.to_delayed().ravel())


# --------------------------------------------------------- on the workers


def _summarise(X, y, sample_weight, codebook, index):
    """What block ``index`` adds to a counting classifier, in a few small arrays."""
    n_features = codebook.projection_.shape[0]
    X = check_float32_range(
        check_array(X, dtype=(np.float64, np.float32), input_name=f"block {index} of X")
    )
    if X.shape[1] != n_features:
        raise ValueError(
            f"Block {index} of X has {X.shape[1]} features, but the codebook was fitted on "
            f"{n_features} features: every block must have the same features."
        )
    y = column_or_1d(y, warn=True)
    if len(y) != X.shape[0]:
        raise ValueError(f"Block {index} of y has {len(y)} labels for {X.shape[0]} rows of X.")
    label_kind(y, "y")
    weights = check_sample_weight(sample_weight, X)
    labels, label_index = np.unique(y, return_inverse=True)
    label_index = label_index.reshape(-1)
    projection, keys = codebook.engine_tensors(torch.device("cpu"))
    n_codebooks, n_keys = keys.shape[:2]
    codes = encode_array(X, projection, keys)
    positive = weights > 0
    rows = flat_codes(codes, n_keys).numpy()[positive]
    entries = rows * len(labels) + label_index[positive, None]
    summary = {
        "labels": labels,
        "entries": entries.reshape(-1),
        "weights": np.repeat(weights[positive], n_codebooks),
        "samples": np.bincount(label_index, minlength=len(labels)).astype(np.int64),
        "totals": np.bincount(label_index, weights=weights, minlength=len(labels)),
        "usage": count_usage(codes[torch.as_tensor(positive)], n_keys).numpy().astype(np.int64),
        "distance_sums": head_distances_of_array(X, projection, keys, codes)[
            torch.as_tensor(positive)
        ].sum(0).numpy(),
        "weight": float(np.sum(weights, dtype=float)),
        "calibration": CalibrationSample(n_codebooks, n_keys).add(X, y, codes, weights),
    }
    return _aggregated(summary)


def _aggregated(summary):
    """The summary with one entry per (row, label): its summed weight."""
    entries, inverse = np.unique(summary["entries"], return_inverse=True)
    weights = np.bincount(inverse.reshape(-1), weights=summary["weights"], minlength=len(entries))
    return {**summary, "entries": entries, "weights": weights}


def _combine(summaries):
    """The summary of the blocks of all these summaries."""
    labels = np.unique(np.concatenate([s["labels"] for s in summaries]))
    n_labels = len(labels)
    entries, weights = [], []
    samples, totals = np.zeros(n_labels, dtype=np.int64), np.zeros(n_labels)
    for s in summaries:
        position = np.searchsorted(labels, s["labels"])
        row, label = np.divmod(s["entries"], len(s["labels"]))
        entries.append(row * n_labels + position[label])
        weights.append(s["weights"])
        np.add.at(samples, position, s["samples"])
        np.add.at(totals, position, s["totals"])
    calibration = summaries[0]["calibration"]
    for s in summaries[1:]:
        calibration = calibration.merged_with(s["calibration"])
    return _aggregated(
        {
            "labels": labels,
            "entries": np.concatenate(entries),
            "weights": np.concatenate(weights),
            "samples": samples,
            "totals": totals,
            "usage": sum(s["usage"] for s in summaries),
            "distance_sums": sum(s["distance_sums"] for s in summaries),
            "weight": sum(s["weight"] for s in summaries),
            "calibration": calibration,
        }
    )


# ------------------------------------------------------------- the client


@all_or_nothing
def _apply(estimator, n_features, total):
    """Fit ``estimator`` to the summed summary ``total``, as ``fit`` would."""
    classes = total["labels"]
    label_kind(classes, "y")
    if total["weight"] == 0:
        raise ValueError(
            "sample_weight is zero for every sample: fit has no sample to learn from."
        )
    # A dask array has no column names: as fit on an ndarray, none are kept.
    estimator.n_features_in_ = n_features
    if hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
    random_state = check_random_state(estimator.random_state)
    codebook, owns_keys = estimator._fitted_codebook(
        np.empty((0, n_features)), random_state, keep_fitted=True
    )
    estimator._random_state = random_state
    estimator._start(codebook, classes, fixed=True, owns_keys=owns_keys)
    estimator._check_weight_budget(total["weight"])
    estimator._class_weights(total["totals"])  # checks class_weight against the classes
    model = estimator._value_model
    row, label = np.divmod(total["entries"], len(classes))
    model.add_entries(
        torch.as_tensor(row, device=model.device),
        torch.as_tensor(label, device=model.device),
        torch.as_tensor(total["weights"], dtype=torch.float32, device=model.device),
    )
    model.samples = total["samples"]
    estimator.key_usage_ = total["usage"]
    estimator._distance_sums = total["distance_sums"]
    estimator._calibration = total["calibration"]
    estimator.class_count_ = total["totals"]
    estimator._weight_seen = total["weight"]
    estimator.n_iter_ = 1
    return estimator
