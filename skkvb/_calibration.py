"""The temperature of the classifier's probabilities (``temperature="auto"``).

Logits are a mean of log-values over C codebooks, which flattens them: their
softmax is under-confident. One temperature T, fitted by minimising the
log-loss of held-out logits, puts the scale right and leaves every decision as
it was.

:class:`CalibrationSample` keeps the training points that fit uses: a
subsample chosen by a hash of each point's codes and label, so which points it
holds depends neither on the order nor on the grouping of the stream. It
stores only what the held-out logits need -- each point's codes, label,
summed weight and multiplicity, and hashes -- never the inputs, and at most
``cap`` points. :func:`fit_temperature` fits T to logits.
"""

import hashlib
import weakref

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

__all__ = [
    "CALIBRATION_CAP",
    "CalibrationSample",
    "code_hashes",
    "fit_temperature",
    "point_hashes",
]

# Most points a calibration sample keeps: about cap / 2 to cap once a stream has
# more. One temperature is one number; a thousand points pin it down.
CALIBRATION_CAP = 2048
# Rows hashed (densified, when sparse) and points decoded at a time.
CHUNK_ROWS = 1024
# T is searched where the widest spread (max - min) of a calibration sample's
# logits, divided by T, lies between these many nats. The upper end guards
# calibration points that are all predicted right, where the log-loss keeps
# falling as T -> 0: probabilities stop at about exp(-50) there.
MIN_SPREAD, MAX_SPREAD = 1e-3, 50.0


def point_hashes(X, y):
    """A 64-bit hash of each (row, label) point: uint64 array (n_samples,).

    Rows are hashed as the float32 values the engine computes with (``-0.0``
    as ``0.0``), so dense and sparse, float32 and float64 inputs of the same
    values hash alike; labels by value, so ``3`` and ``3.0`` too.
    """
    suffixes, inverse = _label_suffixes(y)
    hashes = np.empty(X.shape[0], dtype=np.uint64)
    for start in range(0, X.shape[0], CHUNK_ROWS):
        chunk = X[start : start + CHUNK_ROWS]
        chunk = chunk.toarray() if sp.issparse(chunk) else chunk
        rows = np.ascontiguousarray(chunk, dtype=np.float32) + np.float32(0.0)
        for i, row in enumerate(rows, start):
            hashes[i] = _hash(row.tobytes(), suffixes[inverse[i]])
    return hashes


def code_hashes(codes, y):
    """A 64-bit hash of each (codes, label) pair: uint64 array (n_samples,).

    What decides whether a point is kept: the codes, unlike the input row,
    do not change when the inputs and the keys are scaled together. The
    label's blake2b hash is mixed with one code after the other by
    SplitMix64's finaliser, vectorised over samples (a sample, not a
    cryptographic, hash: it only has to spread points evenly).
    """
    suffixes, inverse = _label_suffixes(y)
    label_hashes = np.array([_hash(b"", suffix) for suffix in suffixes], dtype=np.uint64)
    hashes = label_hashes[inverse] if len(inverse) else np.empty(0, dtype=np.uint64)
    for column in np.asarray(codes, dtype=np.int64).T:
        hashes = _mix(hashes + _GOLDEN + column.astype(np.uint64))
    return hashes


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix(h):
    """SplitMix64's finaliser on a uint64 array (arithmetic modulo 2**64)."""
    h = (h ^ (h >> np.uint64(30))) * _MIX[0]
    h = (h ^ (h >> np.uint64(27))) * _MIX[1]
    return h ^ (h >> np.uint64(31))


def _hash(data, suffix):
    digest = hashlib.blake2b(data, digest_size=8)
    digest.update(suffix)
    return int.from_bytes(digest.digest(), "little")


def _label_suffixes(y):
    """The bytes each label is hashed with, and each sample's index into them."""
    labels, inverse = np.unique(np.asarray(y, dtype=object), return_inverse=True)
    return [_label_bytes(label) for label in labels], inverse.reshape(-1)


def _label_bytes(label):
    if isinstance(label, str):
        return b"s" + label.encode("utf-8")
    return b"n" + np.float64(label).tobytes()


def _threshold_mask(hashes, level):
    """Whether each hash is below ``2**64 / 2**level``: kept at that level."""
    if level == 0:
        return np.ones(len(hashes), dtype=bool)
    return (hashes >> np.uint64(64 - level)) == 0


def _weights(sample_weight, y):
    return np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight)


def _numpy(codes):
    return codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)


def _code_dtype(n_keys):
    return np.int16 if n_keys <= np.iinfo(np.int16).max + 1 else np.int32


class CalibrationSample:
    """The training points ``temperature="auto"`` is fitted on.

    A point is an input row with its label (:func:`point_hashes` names it).
    Learning it again adds to its weight and multiplicity, so an integer
    weight counts as that many copies. A point is kept when the hash of its
    codes and label (:func:`code_hashes`) is below ``2**64 / 2**level``.
    ``level`` starts at 0 (every point) and goes up by one, dropping the
    points above the new threshold, whenever more than ``cap`` points are
    kept. Which points are kept thus depends only on the points learned and
    on the final level, never on their order or grouping. They are stored in
    an order fixed by their codes, labels, weights and multiplicities, so that
    what is computed from them depends on those alone (not on the inputs'
    scale, for one).

    :meth:`add` and :meth:`remove` return a new sample and leave this one as
    it was, so that a fitting call that fails can put the old one back.
    :meth:`remove` is the exact inverse of :meth:`add` at the same level; the
    level never goes down, so a stream from which points are removed may be
    sampled more sparsely than one that never had them.

    Parameters
    ----------
    n_codebooks, n_keys : int
        Shape of the codebooks the codes come from.
    cap : int or None, default=None
        Most points kept; ``None`` means :data:`CALIBRATION_CAP`.
    """

    def __init__(self, n_codebooks, n_keys, cap=None):
        self.n_keys = n_keys
        self.cap = CALIBRATION_CAP if cap is None else cap
        self.level = 0
        self.ids = np.empty(0, dtype=np.uint64)  # point_hashes: which point
        self.draws = np.empty(0, dtype=np.uint64)  # code_hashes: whether kept
        self.codes = np.empty((0, n_codebooks), dtype=_code_dtype(n_keys))
        self.labels = np.empty(0, dtype=object)
        self.weights = np.empty(0, dtype=np.float64)
        self.multiplicity = np.empty(0, dtype=np.int64)
        self._cache = None

    def __len__(self):
        return len(self.ids)

    def __getstate__(self):
        state = dict(vars(self))
        state["_cache"] = None  # weak references; recomputed on demand
        return state

    # ------------------------------------------------------------ points

    def add(self, X, y, codes, sample_weight=None):
        """This sample with the points of a learned batch: a new CalibrationSample.

        Parameters
        ----------
        X : ndarray or scipy sparse matrix of shape (n_samples, n_features)
            The validated batch.
        y : array-like of shape (n_samples,)
            Its labels (values, not positions in ``classes_``).
        codes : Tensor or ndarray of shape (n_samples, n_codebooks)
            The codes the batch was learned with.
        sample_weight : ndarray of shape (n_samples,) or None
            The weights it was learned with; points of weight zero are not kept.
        """
        codes, y, weights = _numpy(codes), np.asarray(y, dtype=object), _weights(sample_weight, y)
        draws = code_hashes(codes, y)
        start = self._raised(draws[weights > 0])
        batch = start._batch(X, y, codes, weights, draws)
        merged = start._merged(
            *(np.concatenate([old, new]) for old, new in zip(start._columns(), batch))
        )
        while len(merged) > merged.cap:
            merged.level += 1
            merged = merged._subset(_threshold_mask(merged.draws, merged.level))
        return merged

    def remove(self, X, y, codes, sample_weight=None):
        """This sample without the points of an unlearned batch: a new CalibrationSample.

        Arguments as for :meth:`add`: each point with the label, codes and
        weight it was learned with. Points above the current threshold were
        never kept and are skipped. Raises ``ValueError`` for a point below it
        that was not added, or added fewer times than it is removed.
        """
        codes, y, weights = _numpy(codes), np.asarray(y, dtype=object), _weights(sample_weight, y)
        batch = self._batch(X, y, codes, weights, code_hashes(codes, y))
        ids, _, _, _, weights, times = batch
        by_id = np.argsort(self.ids)
        position = np.searchsorted(self.ids, ids, sorter=by_id)
        found = position < len(self)
        position[found] = by_id[position[found]]
        found[found] = self.ids[position[found]] == ids[found]
        if not found.all() or np.any(self.multiplicity[position] < times):
            raise ValueError(
                "remove: some of these samples were never added to the calibration "
                "sample with these labels (or fewer times than they are removed)."
            )
        multiplicity = self.multiplicity.copy()
        multiplicity[position] -= times
        left = self.weights.copy()
        left[position] = np.maximum(left[position] - weights, 0.0)
        columns = list(self._columns())
        columns[4:] = [left, multiplicity]
        kept = multiplicity > 0
        return self._merged(*(column[kept] for column in columns))

    def merged_with(self, other):
        """The sample of the points of both samples: a new CalibrationSample.

        Each sample holds every point of its batches below its level's
        threshold, so at the higher of the two levels both hold all their
        points below it; raising it while more than ``cap`` points are kept
        then gives the sample one :meth:`add` of both batches would.
        """
        level = max(self.level, other.level)
        parts = []
        for sample in (self, other):
            part = sample._subset(_threshold_mask(sample.draws, level))
            parts.append(part._columns())
        merged = self._subset(slice(0, 0))
        merged.level = level
        merged = merged._merged(*(np.concatenate(columns) for columns in zip(*parts)))
        while len(merged) > merged.cap:
            merged.level += 1
            merged = merged._subset(_threshold_mask(merged.draws, merged.level))
        return merged

    def _raised(self, draws):
        """This sample at the level that adding points of these draws reaches at least.

        Points of distinct codes and labels are distinct points, so while the
        distinct draws below the threshold outnumber the cap, :meth:`add`
        would raise the level anyway: raising it first spares hashing the rows
        it would drop. (A point learned again with other codes, after its keys
        moved, counts twice here: such streams depend on their order anyway.)
        """
        draws = np.union1d(self.draws, draws)
        level = self.level
        while np.count_nonzero(_threshold_mask(draws, level)) > self.cap:
            level += 1
        raised = self._subset(_threshold_mask(self.draws, level))
        raised.level = level
        return raised

    def _columns(self):
        return self.ids, self.draws, self.codes, self.labels, self.weights, self.multiplicity

    def _batch(self, X, y, codes, weights, draws):
        """The batch's points of positive weight kept at this level, one entry
        per point, as the columns of :meth:`_columns`."""
        index = np.flatnonzero((weights > 0) & _threshold_mask(draws, self.level))
        ids, first, inverse = np.unique(
            point_hashes(X[index], y[index]), return_index=True, return_inverse=True
        )
        inverse = inverse.reshape(-1)
        chosen = index[first]
        return (
            ids,
            draws[chosen],
            codes[chosen].astype(self.codes.dtype),
            y[chosen],
            np.bincount(inverse, weights=weights[index].astype(np.float64), minlength=len(ids)),
            np.bincount(inverse, minlength=len(ids)).astype(np.int64),
        )

    def _merged(self, ids, draws, codes, labels, weights, multiplicity):
        """A sample at this level holding these points in their fixed order.

        A point given twice keeps the codes and label of its first entry and
        the sum of its weights and multiplicities.
        """
        points, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        weights = np.bincount(inverse, weights=weights, minlength=len(points))
        multiplicity = np.bincount(inverse, weights=multiplicity, minlength=len(points))
        new = CalibrationSample(self.codes.shape[1], self.n_keys, self.cap)
        new.level = self.level
        new.ids, new.draws = points, draws[first]
        new.codes, new.labels = codes[first], labels[first]
        new.weights, new.multiplicity = weights, multiplicity.astype(np.int64)
        # Points with equal draws, weights and multiplicities have the same codes
        # and label: they contribute alike, and their relative order is moot.
        return new._subset(np.lexsort((new.multiplicity, new.weights, new.draws)))

    def _subset(self, keep):
        """A sample at this level with the points ``keep`` selects (mask or order)."""
        new = CalibrationSample(self.codes.shape[1], self.n_keys, self.cap)
        new.level = self.level
        new.ids, new.draws, new.codes = self.ids[keep], self.draws[keep], self.codes[keep]
        new.labels = self.labels[keep]
        new.weights, new.multiplicity = self.weights[keep], self.multiplicity[keep]
        return new

    # -------------------------------------------------------- temperature

    def temperature(self, model, classes, key_usage, mask_unused_keys, parameters):
        """The temperature fitted on these points' held-out logits, cached.

        The cache holds while ``model`` and ``key_usage`` are the same objects
        (training replaces ``key_usage_``, and so does unlearning) and the
        parameters are equal.
        """
        key = (bool(mask_unused_keys), _parameters_key(parameters))
        cached = self._cache
        if (
            cached is not None
            and cached[0]() is model
            and cached[1]() is key_usage
            and cached[2] == key
        ):
            return cached[3]
        logits, labels, weights = self.held_out_logits(
            model, classes, key_usage, mask_unused_keys, parameters
        )
        temperature = fit_temperature(logits, labels, weights)
        self._cache = (weakref.ref(model), weakref.ref(key_usage), key, temperature)
        return temperature

    def held_out_logits(self, model, classes, key_usage, mask_unused_keys, parameters):
        """The points' held-out logits (float64), class positions and loss weights.

        Each point's logits are those of ``model`` without it
        (:meth:`~skkvb.engine.values.ValueModel.held_out_logits`): its codes
        give its rows, its summed weight is what it added, and a row is its
        alone when its key usage is no more than the point's multiplicity.
        Points whose label is no longer in ``classes`` are left out. A loss
        weight is the point's weight, times its class weight where
        ``parameters`` has ``class_weights`` and the rule applies them when
        values are read (a rule that applies them in its loss was given the
        weights it learned with).
        """
        present = np.isin(self.labels, classes)
        labels = np.searchsorted(classes, self.labels[present])
        weights = self.weights[present]
        multiplicity = self.multiplicity[present]
        n_codebooks = self.codes.shape[1]
        rows = self.codes[present].astype(np.int64) + self.n_keys * np.arange(n_codebooks)
        alone = key_usage.reshape(-1)[rows] <= multiplicity[:, None]
        logits = np.empty((len(labels), len(classes)))
        device = model.device
        for start in range(0, len(labels), CHUNK_ROWS):
            chunk = slice(start, start + CHUNK_ROWS)
            logits[chunk] = model.held_out_logits(
                torch.as_tensor(rows[chunk], device=device),
                torch.as_tensor(labels[chunk], device=device),
                torch.as_tensor(weights[chunk], dtype=torch.float32, device=device),
                torch.as_tensor(alone[chunk], device=device),
                drop_alone=bool(mask_unused_keys),
                **parameters,
            ).cpu().numpy()
        class_weights = parameters.get("class_weights")
        if class_weights is not None and model.reads_class_weights:
            weights = weights * class_weights.cpu().numpy().astype(np.float64)[labels]
        return logits, labels, weights


def _parameters_key(parameters):
    """The parameters as a comparable tuple (tensors by value)."""
    return tuple(
        (name, tuple(value.tolist()) if isinstance(value, torch.Tensor) else value)
        for name, value in sorted(parameters.items())
    )


def fit_temperature(logits, labels, weights=None):
    """The temperature T > 0 minimising the weighted mean log-loss of
    ``softmax(logits / T)``, in float64.

    The log-loss is convex in 1 / T, so a bounded scalar search finds its
    minimum; T is searched where the widest logit spread over T lies between
    ``MIN_SPREAD`` and ``MAX_SPREAD`` nats. Returns 1.0 when the logits cannot
    tell (no points, no weight, or no spread).

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    labels : array-like of shape (n_samples,)
        Class positions (columns of ``logits``).
    weights : array-like of shape (n_samples,) or None
        Loss weights; ``None`` means one.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if len(labels) == 0 or not total > 0:
        return 1.0
    spread = float((logits.max(1) - logits.min(1)).max())
    if not spread > 0:
        return 1.0
    true_logits = logits[np.arange(len(labels)), labels]

    def log_loss(log_t):
        inverse = np.exp(-log_t)
        return weights @ (logsumexp(logits * inverse, axis=1) - true_logits * inverse) / total

    bounds = (np.log(spread / MAX_SPREAD), np.log(spread / MIN_SPREAD))
    result = minimize_scalar(log_loss, bounds=bounds, method="bounded", options={"xatol": 1e-8})
    return float(np.exp(result.x))
