"""Regression values: per key, the summed weight, target and squared target.

A key's value is the weighted mean of the targets of the samples that fetched
it; a prediction pools the C fetched means, each weighted by the precision of
its key (:func:`pool_key_means`). Learning is one scatter-add of sufficient
statistics per batch, so it takes one pass, touches only the fetched rows, and
does not depend on the order or the grouping of the samples beyond rounding
(exactly not at all for integer-valued statistics, see :func:`add_target_stats`).

The :class:`~skkvb.engine.values.ValueModel` interface with outputs in place of
classes: ``n_classes`` counts the target's outputs, outputs are never added,
and :meth:`RegressionValues.predict` takes the place of ``logits``.
"""

import time

import torch

from ._base import ValueModel

__all__ = ["RegressionValues", "add_target_stats", "key_target_stats", "pool_key_means"]


def stats_dtype(device):
    """float64 wherever the device has it: sums of many targets and squares
    need its 53 bits (MPS has float32 only)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def add_target_stats(table, rows, targets, weights=None):
    """Add ``(w, w * y, w * y**2)`` of each sample to the C rows it fetched, in place.

    ``table`` has columns ``[weight, sum of y (n_outputs), sum of y**2
    (n_outputs)]``. One scatter-add over the (N * C) fetched entries. Every
    addend that is an integer (more generally, a multiple of one power of two)
    with sums below 2**53 is added exactly, and then the result does not depend
    on the order or the grouping of the samples; otherwise it does only through
    the rounding of float64 sums.

    Parameters
    ----------
    table : Tensor (C * K, 1 + 2 * n_outputs), updated in place.
    rows : int64 Tensor (N, C), rows fetched by each sample (``flat_codes``).
    targets : Tensor (N, n_outputs)
    weights : float Tensor (N,) or None
        ``None`` is weight one.
    """
    n_samples, n_codebooks = rows.shape
    targets = targets.to(table.dtype)
    if weights is None:
        weights = torch.ones(n_samples, dtype=table.dtype, device=table.device)
    weights = weights.to(table.dtype).unsqueeze(1)
    weighted = weights * targets
    increments = torch.cat([weights, weighted, weighted * targets], dim=1)
    table.index_put_(
        (rows.reshape(-1),),
        increments.unsqueeze(1).expand(n_samples, n_codebooks, -1).reshape(-1, table.shape[1]),
        accumulate=True,
    )


def key_target_stats(stats, totals, smoothing):
    """Per-key target means and smoothed variances from summed statistics.

    ``stats`` (..., 1 + 2 * n_outputs) are rows of the table, ``totals`` the
    sums over all samples (any one codebook's rows added up). A key's mean is
    ``sum_y / weight``, the global mean for a key of weight zero. Its variance
    is the within-key sum of squared deviations plus ``smoothing`` pseudo-samples
    at the global variance, over ``weight + smoothing``: a key fetched by few
    samples is as uncertain as the target overall.

    Returns (means, variances), each (..., n_outputs).
    """
    n_outputs = (stats.shape[-1] - 1) // 2
    total_weight = totals[0]
    if total_weight > 0:
        global_mean = totals[1 : 1 + n_outputs] / total_weight
        global_variance = (totals[1 + n_outputs :] / total_weight - global_mean**2).clamp(min=0)
    else:
        global_mean = global_variance = totals.new_zeros(n_outputs)
    weight = stats[..., :1]
    sums = stats[..., 1 : 1 + n_outputs]
    fetched = weight > 0
    means = torch.where(fetched, sums / torch.where(fetched, weight, 1.0), global_mean)
    # Squares minus sums times means; rounding can take a zero spread below zero.
    deviations = (stats[..., 1 + n_outputs :] - sums * means).clamp(min=0)
    variances = (deviations + smoothing * global_variance) / (weight + smoothing)
    return means, variances


def pool_key_means(means, variances, pooling):
    """Predictions from the (N, C, n_outputs) means of the fetched keys: (N, n_outputs).

    ``"precision"`` weights each key's mean by the inverse of its variance,
    ``"uniform"`` takes the plain mean over codebooks (the paper's decoder).
    Each output is summed along a contiguous row of C, so its bits depend
    neither on the other samples of the call nor on the number of outputs.
    """
    means = means.transpose(1, 2).contiguous()
    if pooling == "uniform":
        return means.sum(-1) / means.shape[-1]
    variances = variances.transpose(1, 2).contiguous()
    # Weights relative to the most precise key: finite even where variances
    # are zero (those keys then share the whole weight).
    smallest = variances.amin(-1, keepdim=True)
    weights = torch.where(variances > smallest, smallest / variances, 1.0)
    return (weights * means).sum(-1) / weights.sum(-1)


class RegressionValues(ValueModel):
    """``KeyValueBottleneckRegressor``'s values: per-key target statistics.

    The table holds, per key, ``[weight, sum of y, sum of y**2]`` (float64 on
    devices that have it); means and variances are read off it at prediction.
    """

    name = "mean"
    hyperparameters = ("smoothing", "pooling")

    def __init__(self, n_codebooks, n_keys, n_outputs, device):
        super().__init__(n_codebooks, n_keys, n_outputs, growing=False, device=device)
        self.table = self.table.to(stats_dtype(device))

    @property
    def n_outputs(self):
        return self.n_classes

    def to(self, device, copy=False):
        moved = super().to(device, copy=copy)
        moved.table = moved.table.to(stats_dtype(device))
        return moved

    def _columns(self, n_outputs):
        return 1 + 2 * n_outputs

    def _grown_table(self, source):
        raise TypeError("A regression target has a fixed number of outputs.")

    def n_passes(self, max_iter):
        return 1

    def update(self, rows, targets, weights, *, max_iter, random_state, on_pass=None,
               **hyperparameters):
        tic = time.perf_counter()
        add_target_stats(self.table, rows, targets, weights)
        if on_pass is not None:
            on_pass(time.perf_counter() - tic, None)
        return 1

    def totals(self):
        """Statistics summed over all samples: those of the first codebook's keys."""
        return self.table[: self.n_keys].sum(0)

    def predict(self, rows, *, smoothing, pooling):
        """Predictions of samples that fetched ``rows``: (N, n_outputs)."""
        n_samples, n_codebooks = rows.shape
        fetched = self.table.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
        means, variances = key_target_stats(fetched, self.totals(), float(smoothing))
        return pool_key_means(means, variances, pooling)

    def values(self, *, smoothing, pooling=None):
        """Every key's target mean: (C * K, n_outputs)."""
        return key_target_stats(self.table, self.totals(), float(smoothing))[0]

    def variances(self, *, smoothing, pooling=None):
        """Every key's smoothed target variance: (C * K, n_outputs)."""
        return key_target_stats(self.table, self.totals(), float(smoothing))[1]
