"""Counting values: per key, the summed weight of each class that fetched it.

Values are the log-smoothed class frequencies of each key
(:func:`count_values`). Learning is one scatter-add per batch, so it takes one
pass and does not depend on the order or the grouping of the samples.
"""

import time

import torch

from ._base import ValueModel
from .decoding import mean_over_codebooks

__all__ = ["CountValues", "add_counts", "count_values", "decode_counts"]


def add_counts(counts, rows, labels, weights=None):
    """Add each sample's weight to the class counts of the C rows it fetched, in place.

    One scatter-add over the (N * C) fetched entries. With unit (or integer)
    weights every entry is an integer, exact in float32 up to 2**24, so the
    result does not depend on the order or the grouping of the samples.

    Parameters
    ----------
    counts : Tensor (C * K, n_classes), updated in place.
    rows : int64 Tensor (N, C), rows fetched by each sample (``flat_codes``).
    labels : int64 Tensor (N,), class column of each sample.
    weights : float Tensor (N,) or None
        ``None`` counts every sample once.
    """
    n_samples, n_codebooks = rows.shape
    columns = labels.unsqueeze(1).expand(n_samples, n_codebooks)
    if weights is None:
        increments = torch.ones(n_samples * n_codebooks, dtype=counts.dtype, device=counts.device)
    else:
        increments = weights.to(counts.dtype).unsqueeze(1).expand(n_samples, n_codebooks)
    counts.index_put_(
        (rows.reshape(-1), columns.reshape(-1)), increments.reshape(-1), accumulate=True
    )


def count_values(counts, smoothing):
    """Values of a count table: ``log((n_y + a) / (n + a * n_classes))`` per row.

    ``n_y`` is a row's count of class y and ``n`` its total; ``a`` is the
    additive (Laplace) smoothing. Works on any (..., n_classes) slice of counts.
    """
    n_classes = counts.shape[-1]
    totals = counts.sum(-1, keepdim=True)
    return torch.log(counts + smoothing) - torch.log(totals + smoothing * n_classes)


def decode_counts(counts, rows, smoothing):
    """Logits of counting values: the mean over codebooks of the fetched
    ``count_values``, (N, n_classes); only the fetched rows are transformed."""
    n_samples, n_codebooks = rows.shape
    fetched = counts.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
    return mean_over_codebooks(count_values(fetched, smoothing))


class CountValues(ValueModel):
    """``value_update="count"``: the table holds class counts, values are read off them.

    A class not yet seen has count zero everywhere, so a new class enters as a
    zero column -- exactly the column it would have had from the start -- and
    growing label sets need no extra column.
    """

    name = "count"
    hyperparameters = ("count_smoothing",)

    def _columns(self, n_classes):
        return n_classes

    def _grown_table(self, source):
        zero_column = self.table.new_zeros(self.table.shape[0], 1)
        table = torch.cat([self.table, zero_column], dim=1)
        index = torch.as_tensor(source, device=self.device)
        return table[:, torch.where(index >= 0, index, self.n_classes)]

    def n_passes(self, max_iter):
        return 1

    def update(self, rows, labels, weights, *, max_iter, random_state, on_pass=None,
               **hyperparameters):
        tic = time.perf_counter()
        add_counts(self.table, rows, labels, weights)
        if on_pass is not None:
            on_pass(time.perf_counter() - tic, None)
        return 1

    def logits(self, rows, *, count_smoothing):
        return decode_counts(self.table, rows, float(count_smoothing))

    def values(self, *, count_smoothing):
        return count_values(self.table, float(count_smoothing))

    def class_counts(self):
        return self.table
