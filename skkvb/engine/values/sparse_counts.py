"""Class counts stored sparse: only the (key, class) pairs that were seen.

A dense count table has C * K * n_classes entries, most of them zero once
classes number in the hundreds: a key is fetched by the samples of a few
classes only. :class:`SparseCounts` keeps the positive counts as compressed
sparse rows -- per row (key) its classes in increasing order and their counts
-- so memory grows with the (key, class) pairs a stream has shown, not with
the number of classes.

The rows are cut into *chunks* of ``chunk_rows`` rows (one codebook each in
:class:`~skkvb.engine.values.count.CountValues`), each with its own arrays.
Learning merges new pairs into one chunk at a time and replaces that chunk
only, so while a store grows it needs room for one extra chunk, not for a
second copy of the store.

Values are never stored: logits are computed from the counts a sample fetches.
With ``L_r = log(n_r + a * n_classes)`` (``n_r`` the row's total), the value of
class y in row r is ``log(n_ry + a) - L_r``, which is ``log(a) - L_r`` wherever
``n_ry`` is zero, so::

    logits[i, y] = mean_c (log(a) - L_rc) + mean_c (log(n_rc,y + a) - log(a))

a scalar per sample plus a correction over the few pairs with counts. The
results equal those of the dense table up to float32 rounding.

Chunk tensors are never changed in place: an operation builds new ones.
:meth:`SparseCounts.add_` swaps new chunks into the store's list (and, inside
:meth:`SparseCounts.undone_on_error`, records how to swap the old ones back);
every other operation returns a new store, which may share chunk tensors with
the old.
"""

from contextlib import contextmanager

import torch

__all__ = ["SparseCounts"]

# Entries aggregated and merged into the store at a time (bounds temporaries).
MERGE_ENTRIES = 1 << 20
# Stored entries moved at a time while merging: the int64 indices of a slice
# (24 bytes per entry) stay far below the store's 6 bytes per entry.
COPY_ENTRIES = 1 << 20


def _column_dtype(n_classes):
    return torch.int16 if n_classes <= torch.iinfo(torch.int16).max else torch.int32


# ------------------------------------------------- one chunk: (indptr, columns, counts)


def _empty_chunk(n_rows, n_classes, device):
    return (
        torch.zeros(n_rows + 1, dtype=torch.int64, device=device),
        torch.zeros(0, dtype=_column_dtype(n_classes), device=device),
        torch.zeros(0, dtype=torch.float32, device=device),
    )


def _chunk_from_dense(table):
    rows, columns = torch.nonzero(table, as_tuple=True)  # row-major order
    n_rows, n_classes = table.shape
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=table.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return indptr, columns.to(_column_dtype(n_classes)), table[rows, columns]


def _entry_rows(indptr):
    lengths = indptr[1:] - indptr[:-1]
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=indptr.device), lengths)


def _locate(chunk, rows, columns):
    """Position of each (row, column) pair in a chunk's entries, or where it
    would be inserted, and whether it is there: a binary search within each row."""
    indptr, stored, _ = chunk
    low, end = indptr[rows], indptr[rows + 1]
    n_entries = stored.numel()
    if n_entries == 0:
        return low, torch.zeros_like(rows, dtype=torch.bool)
    high = end.clone()
    longest = int((indptr[1:] - indptr[:-1]).max())
    for _ in range(longest.bit_length()):
        middle = (low + high) // 2
        active = low < high
        right = active & (stored[middle.clamp(max=n_entries - 1)].long() < columns)
        low = torch.where(right, middle + 1, low)
        high = torch.where(active & ~right, middle, high)
    found = (low < end) & (stored[low.clamp(max=n_entries - 1)].long() == columns)
    return low, found


def _merged(chunk, rows, columns, sums):
    """The chunk with summed weights added at sorted distinct (row, column)
    pairs, and what :func:`_unmerged` needs to take them out again."""
    indptr, old_columns, old_counts = chunk
    device = old_counts.device
    position, found = _locate(chunk, rows, columns)
    new = ~found
    inserted = position[new]  # non-decreasing: the pairs are sorted
    n_old, n_new = old_counts.numel(), inserted.numel()
    merged_columns = torch.empty(n_old + n_new, dtype=old_columns.dtype, device=device)
    counts = torch.empty(n_old + n_new, dtype=torch.float32, device=device)
    dest = inserted + torch.arange(n_new, device=device)
    merged_columns[dest] = columns[new].to(old_columns.dtype)
    counts[dest] = sums[new]
    # An old entry moves by the number of entries inserted at or before it;
    # placed a slice at a time, so that the int64 indices stay small.
    starts = torch.arange(0, n_old + COPY_ENTRIES, COPY_ENTRIES, device=device)
    bounds = torch.searchsorted(inserted, starts).tolist()  # inserted before each slice
    for i, start in enumerate(range(0, n_old, COPY_ENTRIES)):
        stop = min(start + COPY_ENTRIES, n_old)
        here = torch.bincount(inserted[bounds[i] : bounds[i + 1]] - start, minlength=stop - start)
        moved = torch.arange(start, stop, device=device) + bounds[i]
        moved += torch.cumsum(here[: stop - start], 0)
        merged_columns[moved] = old_columns[start:stop]
        counts[moved] = old_counts[start:stop]
    old = position[found]
    updated = old + torch.searchsorted(inserted, old, right=True)
    previous = counts[updated]
    counts[updated] += sums[found]
    merged_indptr = indptr.clone()
    merged_indptr[1:] += torch.cumsum(torch.bincount(rows[new], minlength=indptr.numel() - 1), 0)
    return (merged_indptr, merged_columns, counts), (dest, updated, previous)


def _unmerged(chunk, undo):
    """Inverse of :func:`_merged`: the chunk as it was, exactly."""
    dest, updated, previous = undo
    counts = chunk[2].clone()
    counts[updated] = previous
    keep = torch.ones(counts.numel(), dtype=torch.bool, device=counts.device)
    keep[dest] = False
    return _kept(chunk, keep, counts=counts)


def _kept(chunk, keep, columns=None, counts=None):
    """The chunk of the entries where ``keep``, with these columns and counts."""
    indptr, old_columns, old_counts = chunk
    columns = old_columns if columns is None else columns
    counts = old_counts if counts is None else counts
    kept_before = torch.zeros(keep.numel() + 1, dtype=torch.int64, device=keep.device)
    kept_before[1:] = torch.cumsum(keep, 0)
    return kept_before[indptr], columns[keep], counts[keep]


def _fetched(chunk, rows):
    """The entries of each row of ``rows`` (N,), local to the chunk:
    (owner in 0..N-1, columns as int64, counts)."""
    indptr, columns, counts = chunk
    start = indptr[rows]
    lengths = indptr[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
    offsets = start - (torch.cumsum(lengths, 0) - lengths)
    position = torch.arange(owner.numel(), device=rows.device) + offsets[owner]
    return owner, columns[position].long(), counts[position]


# ----------------------------------------------------------------- the store


class SparseCounts:
    """Class counts of ``n_rows`` rows (one per key) as compressed sparse rows.

    Parameters
    ----------
    chunks : list of (indptr, columns, counts)
        Chunk i holds rows ``i * chunk_rows`` to ``(i + 1) * chunk_rows - 1``
        (the last one may hold fewer): ``indptr`` int64 (rows + 1,), local to
        the chunk -- row r's entries are ``columns[indptr[r]:indptr[r + 1]]``;
        ``columns`` int16 or int32, each entry's class, increasing within a
        row; ``counts`` float32, each entry's summed weight, positive.
    n_classes : int
    chunk_rows : int
    """

    def __init__(self, chunks, n_classes, chunk_rows):
        self.chunks = chunks
        self.n_classes = n_classes
        self.chunk_rows = chunk_rows
        self._journal = None  # undo records of add_, inside undone_on_error

    def __getstate__(self):
        state = dict(vars(self))
        state["_journal"] = None
        return state

    def __setstate__(self, state):
        if "chunks" not in state:  # pickled as one chunk, before chunks existed
            indptr = state.pop("indptr")
            state["chunks"] = [(indptr, state.pop("columns"), state.pop("counts"))]
            state["chunk_rows"] = max(indptr.numel() - 1, 1)
        state.setdefault("_journal", None)
        vars(self).update(state)

    @classmethod
    def empty(cls, n_rows, n_classes, device, chunk_rows=None):
        """A store with no counts; ``chunk_rows=None`` makes it one chunk."""
        chunk_rows = max(n_rows if chunk_rows is None else chunk_rows, 1)
        chunks = [
            _empty_chunk(min(chunk_rows, n_rows - start), n_classes, device)
            for start in range(0, max(n_rows, 1), chunk_rows)
        ]
        return cls(chunks, n_classes, chunk_rows)

    @classmethod
    def from_dense(cls, table, chunk_rows=None):
        """The store of a dense (n_rows, n_classes) count table."""
        n_rows, n_classes = table.shape
        chunk_rows = max(n_rows if chunk_rows is None else chunk_rows, 1)
        chunks = [
            _chunk_from_dense(table[start : start + chunk_rows])
            for start in range(0, max(n_rows, 1), chunk_rows)
        ]
        return cls(chunks, n_classes, chunk_rows)

    # ------------------------------------------------------------ shape

    @property
    def n_rows(self):
        return sum(chunk[0].numel() - 1 for chunk in self.chunks)

    @property
    def n_entries(self):
        return sum(chunk[2].numel() for chunk in self.chunks)

    @property
    def nbytes(self):
        """Bytes of the chunks' tensors."""
        return sum(t.numel() * t.element_size() for chunk in self.chunks for t in chunk)

    @property
    def device(self):
        return self.chunks[0][2].device

    def to(self, device, copy=False):
        chunks = [tuple(t.to(device, copy=copy) for t in chunk) for chunk in self.chunks]
        return SparseCounts(chunks, self.n_classes, self.chunk_rows)

    def arrays(self):
        """The whole store as one CSR: ``{"columns", "counts", "indptr"}``, new
        tensors (``indptr`` over all rows). What is saved and compared."""
        indptr = [torch.zeros(1, dtype=torch.int64, device=self.device)]
        offset = 0
        for chunk in self.chunks:
            indptr.append(chunk[0][1:] + offset)
            offset += chunk[2].numel()
        return {
            "columns": torch.cat([chunk[1] for chunk in self.chunks]),
            "counts": torch.cat([chunk[2] for chunk in self.chunks]),
            "indptr": torch.cat(indptr),
        }

    def to_dense(self):
        """The (n_rows, n_classes) float32 table."""
        table = torch.zeros(self.n_rows, self.n_classes, dtype=torch.float32, device=self.device)
        for i, (indptr, columns, counts) in enumerate(self.chunks):
            table[_entry_rows(indptr) + i * self.chunk_rows, columns.long()] = counts
        return table

    # --------------------------------------------------------- learning

    def _aggregated(self, rows, columns, weights):
        """Distinct (row, column) pairs in order, with their summed float32 weights."""
        keys = rows * self.n_classes + columns
        pairs, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        sums = torch.zeros(pairs.numel(), dtype=torch.float32, device=self.device)
        sums.index_add_(0, inverse, weights.to(torch.float32))
        return pairs // self.n_classes, pairs % self.n_classes, sums

    def add_(self, rows, columns, weights):
        """Add each weight to its (row, column) count, in place; returns the store.

        ``rows``, ``columns`` (int64) and ``weights`` (float) are 1-d of one
        length; entries of zero weight add nothing and create no entry. The
        entries are merged ``MERGE_ENTRIES`` at a time, each chunk they reach
        replaced by a new one: list rows chunk by chunk (codebook-major) to
        merge each chunk about once.
        """
        positive = weights > 0
        rows, columns, weights = rows[positive], columns[positive], weights[positive]
        for start in range(0, rows.numel(), MERGE_ENTRIES):
            part = slice(start, start + MERGE_ENTRIES)
            pair_rows, pair_columns, sums = self._aggregated(
                rows[part], columns[part], weights[part]
            )
            chunk_of = pair_rows // self.chunk_rows
            present = torch.unique_consecutive(chunk_of)  # pairs are sorted by row
            bounds = torch.searchsorted(chunk_of, present, right=True).tolist()
            first = 0
            for index, last in zip(present.tolist(), bounds):
                here = slice(first, last)
                first = last
                old = self.chunks[index]
                self.chunks[index], undo = _merged(
                    old, pair_rows[here] - index * self.chunk_rows, pair_columns[here], sums[here]
                )
                del old  # the old chunk goes as soon as it is replaced
                if self._journal is not None:
                    self._journal.append((index, undo))
        return self

    def added(self, rows, columns, weights):
        """The store with the weights added (as :meth:`add_`): a new store;
        this one is left as it was."""
        return SparseCounts(list(self.chunks), self.n_classes, self.chunk_rows).add_(
            rows, columns, weights
        )

    @contextmanager
    def undone_on_error(self):
        """Undo the :meth:`add_` calls of the block when it raises, exactly.

        What is kept to undo them is the position of each pair they touched
        in its chunk (and its count before), never a copy of a chunk.
        """
        outer, self._journal = self._journal, []
        try:
            yield self
        except BaseException:
            for index, undo in reversed(self._journal):
                self.chunks[index] = _unmerged(self.chunks[index], undo)
            raise
        finally:
            self._journal = outer

    def removed(self, rows, columns, weights, rtol=0.0, empty_rows=None):
        """The store less each weight at its (row, column): ``(store, overdrawn)``.

        As :func:`~skkvb.engine.values.count.remove_counts`: a count further
        below zero than ``rtol`` times the weight taken from it is overdrawn,
        others are clamped at zero, and rows where ``empty_rows`` (bool) is
        True are emptied. Entries left at zero are dropped. A new store: this
        one is left as it was (chunks with nothing removed are shared).
        """
        rows, columns, sums = self._aggregated(rows, columns, weights)
        chunk_of = rows // self.chunk_rows
        chunks, overdrawn = list(self.chunks), 0
        for index, chunk in enumerate(self.chunks):
            start = index * self.chunk_rows
            n_rows = chunk[0].numel() - 1
            here = chunk_of == index
            empty = None if empty_rows is None else empty_rows[start : start + n_rows]
            if not bool(here.any()) and (empty is None or not bool(empty.any())):
                continue
            local = rows[here] - start
            position, found = _locate(chunk, local, columns[here])
            taken = sums[here]
            overdrawn += int((~found & (taken > 0)).sum())
            counts = chunk[2].clone()
            at = position[found]
            left = counts[at] - taken[found]
            overdrawn += int((left < -rtol * taken[found]).sum())
            counts[at] = left.clamp(min=0.0)
            if empty is not None:
                counts[empty[_entry_rows(chunk[0])]] = 0.0
            chunks[index] = _kept(chunk, counts > 0, counts=counts)
        return SparseCounts(chunks, self.n_classes, self.chunk_rows), overdrawn

    def with_columns(self, source):
        """The store for a new class list: ``source[j]`` is new column j's old
        column, or -1 for a class with no counts; columns not in ``source`` go.

        When classes are only appended and the column type stays, no entry
        changes: the new store shares this one's chunk list, so that adding
        to it frees the old chunks as they are replaced -- this store then
        reads the new counts too, and must be used again only after an
        :meth:`undone_on_error` block of the new one has undone them.
        """
        source = torch.as_tensor(source, dtype=torch.int64, device=self.device)
        n_classes = source.numel()
        new_of_old = torch.full((self.n_classes,), -1, dtype=torch.int64, device=self.device)
        taken = source >= 0
        new_of_old[source[taken]] = torch.arange(n_classes, device=self.device)[taken]
        dtype = _column_dtype(n_classes)
        appended = torch.equal(new_of_old, torch.arange(self.n_classes, device=self.device))
        if appended and dtype == self.chunks[0][1].dtype:
            return SparseCounts(self.chunks, n_classes, self.chunk_rows)
        sort = not bool((torch.diff(source[taken]) > 0).all())  # reordered: sort rows again
        chunks = []
        for chunk in self.chunks:
            indptr, columns, counts = chunk
            mapped = torch.empty(columns.numel(), dtype=dtype, device=self.device)
            for start in range(0, columns.numel(), MERGE_ENTRIES):  # bounds int64 temporaries
                part = slice(start, start + MERGE_ENTRIES)
                mapped[part] = new_of_old[columns[part].long()].clamp(min=-1).to(dtype)
            chunk = _kept(chunk, mapped >= 0, columns=mapped)
            if sort:
                order = torch.argsort(_entry_rows(chunk[0]) * n_classes + chunk[1].long())
                chunk = (chunk[0], chunk[1][order], chunk[2][order])
            chunks.append(chunk)
        return SparseCounts(chunks, n_classes, self.chunk_rows)

    # -------------------------------------------------------- reading

    def _fetched(self, rows):
        """The stored entries of each row of ``rows`` (N,), global row numbers:
        (owner in 0..N-1, columns as int64, counts)."""
        if rows.numel() == 0:
            nothing = rows.new_zeros(0)
            return nothing, nothing, torch.zeros(0, dtype=torch.float32, device=self.device)
        chunk_of = rows // self.chunk_rows
        first, last = int(chunk_of.min()), int(chunk_of.max())
        if first == last:  # one codebook's rows: one chunk
            return _fetched(self.chunks[first], rows - first * self.chunk_rows)
        parts = []
        for index in torch.unique(chunk_of).tolist():
            mine = torch.nonzero(chunk_of == index).squeeze(1)
            owner, columns, counts = _fetched(
                self.chunks[index], rows[mine] - index * self.chunk_rows
            )
            parts.append((mine[owner], columns, counts))
        return tuple(torch.cat(part) for part in zip(*parts))

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
            owner, columns, counts = self._fetched(rows[:, c])
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
