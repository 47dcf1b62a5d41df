"""Class counts stored sparse: only the (key, class) pairs that were seen.

A dense count table has C * K * n_classes entries, most of them zero once
classes number in the hundreds: a key is fetched by the samples of a few
classes only. :class:`SparseCounts` keeps the positive counts as compressed
sparse rows -- per row (key) its classes in increasing order and their counts
-- so memory grows with the (key, class) pairs a stream has shown, not with
the number of classes.

Values are never stored: logits are computed from the counts a sample fetches.
With ``L_r = log(n_r + a * n_classes)`` (``n_r`` the row's total), the value of
class y in row r is ``log(n_ry + a) - L_r``, which is ``log(a) - L_r`` wherever
``n_ry`` is zero, so::

    logits[i, y] = mean_c (log(a) - L_rc) + mean_c (log(n_rc,y + a) - log(a))

a scalar per sample plus a correction over the few pairs with counts. The
results equal those of the dense table up to float32 rounding.

A store is never changed in place: every operation returns a new one (which
may share tensors with the old), so a model holding the old store keeps it as
it was.
"""

import torch

__all__ = ["SparseCounts"]

# Entries aggregated and merged into the store at a time (bounds temporaries).
MERGE_ENTRIES = 1 << 22
# Stored entries moved at a time while merging: the int64 indices of a slice
# (24 bytes per entry) stay far below the store's 6 bytes per entry.
COPY_ENTRIES = 1 << 20


def _column_dtype(n_classes):
    return torch.int16 if n_classes <= torch.iinfo(torch.int16).max else torch.int32


class SparseCounts:
    """Class counts of ``n_rows`` rows (one per key) as compressed sparse rows.

    Parameters
    ----------
    indptr : int64 Tensor (n_rows + 1,)
        Row r's entries are ``columns[indptr[r]:indptr[r + 1]]``.
    columns : int16 or int32 Tensor (n_entries,)
        Class column of each entry, increasing within a row.
    counts : float32 Tensor (n_entries,)
        Summed weight of each entry, positive.
    n_classes : int
    """

    def __init__(self, indptr, columns, counts, n_classes):
        self.indptr = indptr
        self.columns = columns
        self.counts = counts
        self.n_classes = n_classes

    @classmethod
    def empty(cls, n_rows, n_classes, device):
        """A store with no counts."""
        return cls(
            torch.zeros(n_rows + 1, dtype=torch.int64, device=device),
            torch.zeros(0, dtype=_column_dtype(n_classes), device=device),
            torch.zeros(0, dtype=torch.float32, device=device),
            n_classes,
        )

    @classmethod
    def from_dense(cls, table):
        """The store of a dense (n_rows, n_classes) count table."""
        rows, columns = torch.nonzero(table, as_tuple=True)  # row-major order
        n_rows, n_classes = table.shape
        indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=table.device)
        indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
        return cls(indptr, columns.to(_column_dtype(n_classes)), table[rows, columns], n_classes)

    # ------------------------------------------------------------ shape

    @property
    def n_rows(self):
        return self.indptr.numel() - 1

    @property
    def n_entries(self):
        return self.counts.numel()

    @property
    def nbytes(self):
        """Bytes of the three tensors."""
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.columns, self.counts))

    @property
    def device(self):
        return self.counts.device

    def to(self, device, copy=False):
        return SparseCounts(
            *(t.to(device, copy=copy) for t in (self.indptr, self.columns, self.counts)),
            self.n_classes,
        )

    def to_dense(self):
        """The (n_rows, n_classes) float32 table."""
        table = torch.zeros(self.n_rows, self.n_classes, dtype=torch.float32, device=self.device)
        table[self._entry_rows(), self.columns.long()] = self.counts
        return table

    def _entry_rows(self):
        lengths = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(self.n_rows, device=self.device), lengths)

    # ---------------------------------------------------------- lookups

    def _locate(self, rows, columns):
        """Position of each (row, column) pair in the entries, or where it would
        be inserted, and whether it is there: a binary search within each row."""
        low, end = self.indptr[rows], self.indptr[rows + 1]
        n_entries = self.n_entries
        if n_entries == 0:
            return low, torch.zeros_like(rows, dtype=torch.bool)
        high = end.clone()
        longest = int((self.indptr[1:] - self.indptr[:-1]).max())
        for _ in range(longest.bit_length()):
            middle = (low + high) // 2
            active = low < high
            right = active & (self.columns[middle.clamp(max=n_entries - 1)].long() < columns)
            low = torch.where(right, middle + 1, low)
            high = torch.where(active & ~right, middle, high)
        found = (low < end) & (self.columns[low.clamp(max=n_entries - 1)].long() == columns)
        return low, found

    def _aggregated(self, rows, columns, weights):
        """Distinct (row, column) pairs in order, with their summed float32 weights."""
        keys = rows * self.n_classes + columns
        pairs, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        sums = torch.zeros(pairs.numel(), dtype=torch.float32, device=self.device)
        sums.index_add_(0, inverse, weights.to(torch.float32))
        return pairs // self.n_classes, pairs % self.n_classes, sums

    def _gather(self, rows):
        """The entries of each row of ``rows`` (N,): (owner in 0..N-1, position)."""
        start = self.indptr[rows]
        lengths = self.indptr[rows + 1] - start
        owner = torch.repeat_interleave(torch.arange(rows.numel(), device=self.device), lengths)
        offsets = start - (torch.cumsum(lengths, 0) - lengths)
        return owner, torch.arange(owner.numel(), device=self.device) + offsets[owner]

    # --------------------------------------------------------- learning

    def added(self, rows, columns, weights):
        """The store with each weight added to its (row, column) count: a new store.

        ``rows``, ``columns`` (int64) and ``weights`` (float) are 1-d of one
        length; entries of zero weight add nothing and create no entry.
        """
        positive = weights > 0
        rows, columns, weights = rows[positive], columns[positive], weights[positive]
        store = self
        for start in range(0, rows.numel(), MERGE_ENTRIES):
            part = slice(start, start + MERGE_ENTRIES)
            store = store._merged(*store._aggregated(rows[part], columns[part], weights[part]))
        return store

    def _merged(self, rows, columns, sums):
        position, found = self._locate(rows, columns)
        new = ~found
        inserted = position[new]  # non-decreasing: the pairs are sorted
        n_old, n_new = self.n_entries, inserted.numel()
        merged_columns = torch.empty(n_old + n_new, dtype=self.columns.dtype, device=self.device)
        counts = torch.empty(n_old + n_new, dtype=torch.float32, device=self.device)
        dest = inserted + torch.arange(n_new, device=self.device)
        merged_columns[dest] = columns[new].to(self.columns.dtype)
        counts[dest] = sums[new]
        # An old entry moves by the number of entries inserted at or before it;
        # placed a slice at a time, so that the int64 indices stay small.
        starts = torch.arange(0, n_old + COPY_ENTRIES, COPY_ENTRIES, device=self.device)
        bounds = torch.searchsorted(inserted, starts).tolist()  # inserted before each slice
        for i, start in enumerate(range(0, n_old, COPY_ENTRIES)):
            stop = min(start + COPY_ENTRIES, n_old)
            here = torch.bincount(inserted[bounds[i] : bounds[i + 1]] - start,
                                  minlength=stop - start)
            moved = torch.arange(start, stop, device=self.device) + bounds[i]
            moved += torch.cumsum(here[: stop - start], 0)
            merged_columns[moved] = self.columns[start:stop]
            counts[moved] = self.counts[start:stop]
        old = position[found]
        counts[old + torch.searchsorted(inserted, old, right=True)] += sums[found]
        added_per_row = torch.bincount(rows[new], minlength=self.n_rows)
        indptr = self.indptr.clone()
        indptr[1:] += torch.cumsum(added_per_row, 0)
        return SparseCounts(indptr, merged_columns, counts, self.n_classes)

    def removed(self, rows, columns, weights, rtol=0.0, empty_rows=None):
        """The store less each weight at its (row, column): ``(store, overdrawn)``.

        As :func:`~skkvb.engine.values.count.remove_counts`: a count further
        below zero than ``rtol`` times the weight taken from it is overdrawn,
        others are clamped at zero, and rows where ``empty_rows`` (bool) is
        True are emptied. Entries left at zero are dropped.
        """
        rows, columns, sums = self._aggregated(rows, columns, weights)
        position, found = self._locate(rows, columns)
        overdrawn = int((~found & (sums > 0)).sum())
        counts = self.counts.clone()
        at = position[found]
        left = counts[at] - sums[found]
        overdrawn += int((left < -rtol * sums[found]).sum())
        counts[at] = left.clamp(min=0.0)
        if empty_rows is not None:
            counts[empty_rows[self._entry_rows()]] = 0.0
        return self._kept(counts > 0, counts=counts), overdrawn

    def _kept(self, keep, columns=None, counts=None):
        """The store of the entries where ``keep``, with these columns and counts."""
        columns = self.columns if columns is None else columns
        counts = self.counts if counts is None else counts
        kept_before = torch.zeros(self.n_entries + 1, dtype=torch.int64, device=self.device)
        kept_before[1:] = torch.cumsum(keep, 0)
        return SparseCounts(kept_before[self.indptr], columns[keep], counts[keep], self.n_classes)

    def with_columns(self, source):
        """The store for a new class list: ``source[j]`` is new column j's old
        column, or -1 for a class with no counts; columns not in ``source`` go."""
        source = torch.as_tensor(source, dtype=torch.int64, device=self.device)
        n_classes = source.numel()
        new_of_old = torch.full((self.n_classes,), -1, dtype=torch.int64, device=self.device)
        taken = source >= 0
        new_of_old[source[taken]] = torch.arange(n_classes, device=self.device)[taken]
        dtype = _column_dtype(n_classes)
        if bool((new_of_old >= 0).all()):  # classes added only: every entry stays
            if torch.equal(new_of_old, torch.arange(self.n_classes, device=self.device)):
                columns = self.columns.to(dtype)  # appended: the same columns (shared)
            else:  # remapped a slice at a time, to bound the int64 temporaries
                columns = torch.empty(self.n_entries, dtype=dtype, device=self.device)
                for start in range(0, self.n_entries, MERGE_ENTRIES):
                    part = slice(start, start + MERGE_ENTRIES)
                    columns[part] = new_of_old[self.columns[part].long()].to(dtype)
            store = SparseCounts(self.indptr, columns, self.counts, n_classes)
        else:
            columns = new_of_old[self.columns.long()]
            store = self._kept(columns >= 0, columns=columns.to(dtype))
            store.n_classes = n_classes
        if not bool((torch.diff(source[taken]) > 0).all()):  # reordered: sort each row again
            rows = store._entry_rows()
            order = torch.argsort(rows * n_classes + store.columns.long())
            store.columns, store.counts = store.columns[order], store.counts[order]
        return store

    # -------------------------------------------------------- reading

    def logits(self, rows, smoothing, class_weights=None):
        """Mean over codebooks of the fetched count values: (N, n_classes) float32.

        ``rows`` (N, C) are the fetched rows; ``class_weights`` (n_classes,)
        multiply each class's counts first, as in ``count_values``.
        """
        keep = torch.ones(rows.shape, dtype=torch.bool, device=rows.device)
        return self._mean_values(rows, smoothing, class_weights, keep, None, None)

    def held_out_logits(self, rows, labels, weights, alone, drop_alone, smoothing,
                        class_weights=None):
        """Logits of training samples from the counts without each of them.

        As :meth:`~skkvb.engine.values.ValueModel.held_out_logits` of dense
        counts: sample i's weight is taken from its class in its rows
        (clamped at zero), rows it fetched ``alone`` count as empty, or with
        ``drop_alone`` leave the mean.
        """
        keep = ~alone if drop_alone else torch.ones_like(alone)
        return self._mean_values(rows, smoothing, class_weights, keep, alone, (labels, weights))

    def _mean_values(self, rows, smoothing, class_weights, keep, empty, own):
        n_samples, n_codebooks = rows.shape
        n_classes = self.n_classes
        log_a = torch.log(torch.tensor(smoothing, dtype=torch.float32, device=self.device))
        base = torch.zeros(n_samples, dtype=torch.float64, device=self.device)
        corrections = torch.zeros(n_samples, n_classes, dtype=torch.float32, device=self.device)
        for c in range(n_codebooks):
            owner, position = self._gather(rows[:, c])
            columns = self.columns[position].long()
            counts = self.counts[position]
            if own is not None:  # leave-one-out: the sample's own weight is taken out
                labels, weights = own
                mine = columns == labels[owner]
                counts = torch.where(mine, (counts - weights[owner]).clamp(min=0.0), counts)
                counts = counts.masked_fill(empty[owner, c], 0.0)
            counts = counts.masked_fill(~keep[owner, c], 0.0)
            if class_weights is not None:
                counts = counts * class_weights[columns]
            totals = torch.zeros(n_samples, dtype=torch.float32, device=self.device)
            totals.index_add_(0, owner, counts)
            empty_term = log_a - torch.log(totals + smoothing * n_classes)
            base += torch.where(keep[:, c], empty_term, 0.0).double()
            corrections.index_put_(
                (owner, columns), torch.log(counts + smoothing) - log_a, accumulate=True
            )
        n_kept = keep.sum(1).clamp(min=1).double()
        corrections /= n_kept.float().unsqueeze(1)
        return corrections.add_((base / n_kept).float().unsqueeze(1))
