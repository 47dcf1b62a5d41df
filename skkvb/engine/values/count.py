"""Counting values: per key, the summed weight of each class that fetched it.

Values are the log-smoothed class frequencies of each key
(:func:`count_values`). Learning is one scatter-add per batch, so it takes one
pass and does not depend on the order or the grouping of the samples; and the
table is a sum of per-sample contributions, so samples can be taken out again
(:func:`remove_counts`, :meth:`CountValues.without`). The functions here work
on dense tables; with many classes :class:`CountValues` keeps its counts in a
:class:`~skkvb.engine.values.sparse_counts.SparseCounts` instead (see there).
"""

import time
from contextlib import contextmanager
from copy import copy as _shallow_copy

import numpy as np
import torch

from ._base import ValueModel
from .decoding import mean_over_codebooks
from .sparse_counts import SparseCounts

__all__ = [
    "DENSE_LIMIT_BYTES",
    "CountValues",
    "add_counts",
    "count_store",
    "count_values",
    "decode_counts",
    "leave_one_out_counts",
    "remove_counts",
]


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


def remove_counts(counts, rows, labels, weights=None, rtol=0.0, empty_rows=None):
    """``counts`` less each sample's weight in the C rows it fetched: a new table.

    The inverse of :func:`add_counts`; ``counts`` is left as it was. With
    integer weights every entry stays an integer, so taking out samples that
    were added gives exactly the table that never had them. Non-integer
    weights were summed with float32 rounding, so an entry that should return
    to zero may end a little below it: entries no further below zero than
    ``rtol`` times the weight taken from them become zero. ``empty_rows``
    (bool, C * K), where given, names rows that no remaining sample fetches:
    they become exactly zero, whatever rounding left.

    Returns ``(table, overdrawn)``: ``overdrawn`` is the number of entries that
    fall further below zero -- more weight taken out than was ever put in.
    """
    removed = torch.zeros_like(counts)
    add_counts(removed, rows, labels, weights)
    table = counts - removed
    overdrawn = int((table < -rtol * removed).sum())
    table.clamp_(min=0.0)
    if empty_rows is not None:
        table[empty_rows] = 0.0
    return table, overdrawn


def count_values(counts, smoothing, class_weights=None):
    """Values of a count table: ``log((n_y + a) / (n + a * n_classes))`` per row.

    ``n_y`` is a row's count of class y and ``n`` its total; ``a`` is the
    additive (Laplace) smoothing. Works on any (..., n_classes) slice of counts.
    With ``class_weights`` (n_classes,), each class's counts are first
    multiplied by its weight: the counts weighted samples of that class would give.
    """
    if class_weights is not None:
        counts = counts * class_weights
    n_classes = counts.shape[-1]
    totals = counts.sum(-1, keepdim=True)
    return torch.log(counts + smoothing) - torch.log(totals + smoothing * n_classes)


def decode_counts(counts, rows, smoothing, class_weights=None):
    """Logits of counting values: the mean over codebooks of the fetched
    ``count_values``, (N, n_classes); only the fetched rows are transformed."""
    n_samples, n_codebooks = rows.shape
    fetched = counts.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
    return mean_over_codebooks(count_values(fetched, smoothing, class_weights))


def leave_one_out_counts(counts, rows, labels, weights, alone):
    """The class counts each sample fetched, less its own: (N, C, n_classes).

    Sample i's rows hold the counts of the table without it: its weight
    ``weights[i]`` is taken from its class ``labels[i]`` in each of its rows
    ``rows[i]``. Counts rounded below zero (non-integer weights) become zero,
    and so do the rows where ``alone`` (N, C) says no other sample fetched
    them. With integer weights the result is exactly the counts of a table
    that never had the sample.
    """
    n_samples, n_codebooks = rows.shape
    fetched = counts.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
    own = weights.to(fetched.dtype).view(-1, 1, 1).expand(n_samples, n_codebooks, 1)
    column = labels.view(-1, 1, 1).expand(n_samples, n_codebooks, 1)
    fetched.scatter_add_(2, column, -own)
    return fetched.clamp_(min=0.0).masked_fill_(alone.unsqueeze(-1), 0.0)


# Largest dense count table, in bytes; beyond it counts are stored sparse (CountValues).
DENSE_LIMIT_BYTES = 64 * 2**20


def count_store(n_rows, n_classes, store="auto"):
    """The store that ``store`` picks for ``n_rows`` keys and ``n_classes`` classes:
    ``"dense"`` while the float32 table fits :data:`DENSE_LIMIT_BYTES`, else ``"sparse"``."""
    if store != "auto":
        return store
    return "dense" if n_rows * n_classes * 4 <= DENSE_LIMIT_BYTES else "sparse"


class CountValues(ValueModel):
    """``value_update="count"``: the table holds class counts, values are read off them.

    A class not yet seen has count zero everywhere, so a new class enters as a
    zero column -- exactly the column it would have had from the start -- and
    growing label sets need no extra column. Class weights are applied when the
    counts are read, so the counts themselves stay independent of them.

    *Stores.* The counts live in a dense (C * K, n_classes) float32 ``table``
    while it takes at most :data:`DENSE_LIMIT_BYTES` (64 MiB: up to 16
    classes with the paper's 256 x 4096 keys), and otherwise in a
    :class:`~skkvb.engine.values.sparse_counts.SparseCounts` (``sparse``,
    ``table`` is None) that holds only the (key, class) pairs seen -- about 6
    bytes each (8 beyond 32,767 classes) -- and computes values as they are
    read. Both give the same counts, and logits equal up to float32 rounding.
    The sparse store keeps one chunk per codebook and learning replaces the
    chunks one at a time, so a growing store needs little more memory than it
    takes. A growing class set that crosses the limit switches from dense to sparse
    when the class is added; the store never switches back. ``store="dense"``
    or ``"sparse"`` fixes it. :meth:`values` and :meth:`class_counts` return
    dense tables whatever the store.
    """

    name = "count"
    hyperparameters = ("count_smoothing",)
    reads_class_weights = True
    # Defaults for models pickled before the sparse store existed: dense, rule "auto".
    sparse = None
    store_rule = "auto"

    def __init__(self, n_codebooks, n_keys, n_classes, growing, device, store="auto"):
        self.store_rule = store
        self.sparse = None
        if count_store(n_codebooks * n_keys, n_classes, store) == "dense":
            super().__init__(n_codebooks, n_keys, n_classes, growing, device)
        else:
            self.n_codebooks, self.n_keys = n_codebooks, n_keys
            self.n_classes, self.growing, self.n_steps = n_classes, growing, 0
            self.table = None
            self.sparse = SparseCounts.empty(
                n_codebooks * n_keys, n_classes, device, chunk_rows=n_keys
            )
        # Samples learned per class, zero weights included: the exact record of
        # which classes a model has seen, which the float counts cannot give.
        self.samples = np.zeros(n_classes, dtype=np.int64)

    @property
    def store(self):
        """``"dense"`` or ``"sparse"``: where the counts are now."""
        return "dense" if self.sparse is None else "sparse"

    @property
    def device(self):
        return self.table.device if self.sparse is None else self.sparse.device

    @property
    def storage_bytes(self):
        """Bytes the counts take (the dense table, or the sparse store's tensors)."""
        if self.sparse is None:
            return self.table.numel() * self.table.element_size()
        return self.sparse.nbytes

    def to(self, device, copy=False):
        if self.sparse is None:
            return super().to(device, copy)
        moved = _shallow_copy(self)
        moved.sparse = self.sparse.to(device, copy=copy)
        return moved

    def _columns(self, n_classes):
        return n_classes

    def add_classes(self, source):
        source = np.asarray(source)
        n_rows = self.n_codebooks * self.n_keys
        if self.sparse is None and count_store(n_rows, len(source), self.store_rule) == "dense":
            grown = super().add_classes(source)
        else:
            grown = _shallow_copy(self)
            sparse = self.sparse
            if sparse is None:
                sparse = SparseCounts.from_dense(self.table, chunk_rows=self.n_keys)
            # Classes appended: the grown store shares this one's chunks (see
            # shares_storage), so that learning frees the old ones as it goes.
            grown.table, grown.sparse = None, sparse.with_columns(source)
            grown.n_classes = len(source)
        grown.samples = np.where(source >= 0, self.samples[np.maximum(source, 0)], 0)
        return grown

    @property
    def shares_storage(self):
        # A sparse store grown by add_classes shares its chunks with the model
        # it grew from, and learning replaces them in place: always guarded.
        return self.sparse is not None

    @contextmanager
    def restored_on_error(self, rows):
        samples = self.samples  # replaced, never changed in place
        sparse = self.sparse
        if sparse is None:
            guard = super().restored_on_error(rows)
        else:  # the chunks add_ replaced are swapped back, exactly
            guard = sparse.undone_on_error()
        try:
            with guard:
                yield
        except BaseException:
            self.samples, self.sparse = samples, sparse
            raise

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
        if self.sparse is None:
            add_counts(self.table, rows, labels, weights)
        else:
            self.sparse.add_(*self._entries(rows, labels, weights))
        self.samples = self.samples + self._per_class(labels)
        if on_pass is not None:
            on_pass(time.perf_counter() - tic, None)
        return 1

    def _entries(self, rows, labels, weights):
        """The (row, class column, float32 weight) of every fetched entry, 1-d:
        what the sparse store adds or removes for these samples. Codebook-major,
        so that the store merges each of its chunks (a codebook) about once."""
        n_samples, n_codebooks = rows.shape
        if weights is None:
            weights = torch.ones(n_samples, dtype=torch.float32, device=self.device)
        return (
            rows.t().reshape(-1),
            labels.unsqueeze(0).expand(n_codebooks, n_samples).reshape(-1),
            weights.to(torch.float32).unsqueeze(0).expand(n_codebooks, n_samples).reshape(-1),
        )

    def add_entries(self, rows, columns, weights):
        """Add summed weights to single (row, class column) counts, in place
        (``skkvb.dask.fit`` adds its per-pair totals this way); 1-d tensors."""
        if self.sparse is None:
            self.table.index_put_(
                (rows, columns), weights.to(self.table.dtype), accumulate=True
            )
        else:
            self.sparse.add_(rows, columns, weights.to(torch.float32))

    def logits(self, rows, *, count_smoothing, class_weights=None):
        if self.sparse is None:
            return decode_counts(self.table, rows, float(count_smoothing), class_weights)
        return self.sparse.logits(rows, float(count_smoothing), class_weights)

    def values(self, *, count_smoothing, class_weights=None):
        return count_values(self.class_counts(), float(count_smoothing), class_weights)

    def class_counts(self):
        return self.table if self.sparse is None else self.sparse.to_dense()

    def held_out_logits(self, rows, labels, weights, alone, drop_alone, **hyperparameters):
        if self.sparse is None:
            return super().held_out_logits(
                rows, labels, weights, alone, drop_alone, **hyperparameters
            )
        return self.sparse.held_out_logits(
            rows, labels, weights.to(torch.float32), alone, drop_alone,
            float(hyperparameters["count_smoothing"]), hyperparameters.get("class_weights"),
        )

    def _values_without(self, rows, labels, weights, alone, *, count_smoothing,
                        class_weights=None):
        # Exact: a count table is a sum over samples (leave-one-out).
        counts = leave_one_out_counts(self.table, rows, labels, weights, alone)
        return count_values(counts, float(count_smoothing), class_weights)

    def without(self, rows, labels, weights=None, rtol=0.0, empty_rows=None):
        """A new model with these samples' counts taken out; this one is left as it was.

        Arguments as :meth:`update`, plus ``rtol`` and ``empty_rows`` of
        :func:`remove_counts`. Returns ``(model, overdrawn)``: ``overdrawn``
        counts the table entries and per-class sample numbers that would fall
        below zero -- samples taken out that were never learned. When it is not
        zero, the model returned is meaningless.
        """
        model = _shallow_copy(self)
        if self.sparse is None:
            model.table, overdrawn = remove_counts(
                self.table, rows, labels, weights, rtol, empty_rows
            )
        else:
            model.sparse, overdrawn = self.sparse.removed(
                *self._entries(rows, labels, weights), rtol, empty_rows
            )
        model.samples = self.samples - self._per_class(labels)
        return model, overdrawn + int((model.samples < 0).sum())

    def _per_class(self, labels):
        return np.bincount(labels.cpu().numpy(), minlength=self.n_classes).astype(np.int64)
