"""The interface every value rule implements (DKVB steps 4-5)."""

from contextlib import contextmanager
from copy import copy as _shallow_copy

import torch

from .decoding import mean_over_codebooks, mean_over_kept_codebooks

__all__ = ["ValueModel"]


class ValueModel:
    """The values of one bottleneck, learned by one rule.

    A model owns ``table``, a (C * K, n_columns) float32 tensor with one row per
    key; a sample's codes name the C rows it fetches
    (:func:`~skkvb.engine.codes.flat_codes`). Training changes only the rows
    its samples fetched. Columns follow the estimator's sorted class list.

    A subclass sets :attr:`name` and :attr:`hyperparameters` and implements ``_columns``,
    ``_grown_table``, :meth:`update`, :meth:`logits` and :meth:`values`. The
    estimator reads the parameters named in :attr:`hyperparameters` off
    itself and passes them as keyword arguments, so a new rule needs no change
    to the estimator beyond its parameters.

    Parameters
    ----------
    n_codebooks, n_keys : int
        Shape of the codebooks the codes come from.
    n_classes : int
        Number of classes at the start.
    growing : bool
        Whether classes may be added later (:meth:`add_classes`).
    device : torch.device
        Where the table lives.
    """

    #: The estimators' ``value_update`` name of this rule.
    name = None
    #: Names of the estimator parameters this rule reads.
    hyperparameters = ()
    #: Whether class weights apply when values are read (else in the loss, as learned).
    reads_class_weights = False
    #: The estimators' ``decoder`` name: how fetched values become logits.
    decoder = "mean"
    #: Whether a model :meth:`add_classes` returned shares storage with the one
    #: it grew from, so that training it must be guarded (:meth:`restored_on_error`)
    #: even on the call that grew it.
    shares_storage = False

    def __init__(self, n_codebooks, n_keys, n_classes, growing, device):
        self.n_codebooks = n_codebooks
        self.n_keys = n_keys
        self.n_classes = n_classes
        self.growing = growing
        self.n_steps = 0  # optimisation steps taken so far
        self.table = torch.zeros(
            n_codebooks * n_keys, self._columns(n_classes), dtype=torch.float32, device=device
        )

    @property
    def device(self):
        return self.table.device

    def to(self, device, copy=False):
        """The model with its table on ``device``: a new model, whose table is
        the same tensor when it is there already, unless ``copy``."""
        moved = _shallow_copy(self)
        moved.table = self.table.to(device, copy=copy)
        return moved

    def add_classes(self, source):
        """A new model with more classes; this one is left as it was.

        ``source[j]`` is the column of new class ``j`` in this model, or -1 for
        a class never seen before, which starts as the rule says a class that
        was never seen looks.
        """
        grown = _shallow_copy(self)
        grown.table = self._grown_table(source)
        grown.n_classes = len(source)
        return grown

    @contextmanager
    def restored_on_error(self, rows):
        """Undo in-place training of the block when it raises (KeyboardInterrupt too).

        Only the rows in ``rows`` can change, so those are copied -- or the whole
        table when ``rows`` lists more entries than it has rows: at most one
        table, once per call. They are copied back only on failure.
        """
        flat = rows.reshape(-1)
        if flat.numel() < self.table.shape[0]:
            saved = self.table.index_select(0, flat)
        else:
            flat, saved = None, self.table.clone()
        n_steps = self.n_steps
        try:
            yield
        except BaseException:
            if flat is None:
                self.table.copy_(saved)
            else:  # a row listed twice was saved twice with the same value: order is moot
                self.table.index_copy_(0, flat, saved)
            self.n_steps = n_steps
            raise

    def class_counts(self):
        """Per-key class counts, for the rules that keep them."""
        raise AttributeError(f"{type(self).__name__} keeps no class counts.")

    def held_out_logits(self, rows, labels, weights, alone, drop_alone, **hyperparameters):
        """Logits of training samples as a model without each of them gives them.

        The calibration logits of ``temperature="auto"``. Each sample's own
        contribution is taken out of the values it fetched as far as the rule
        can (:meth:`_values_without`). A key that no other training sample
        fetched (``alone``) is never trained without it: with ``drop_alone``
        (a prediction that snaps to fetched keys only) its codebook is left out
        of the mean; else it gives the rule's never-trained value.

        Parameters
        ----------
        rows : int64 Tensor (N, C)
            Rows the samples fetched when they were learned.
        labels : int64 Tensor (N,)
            Their class columns.
        weights : float32 Tensor (N,)
            The weight each sample added, in total.
        alone : bool Tensor (N, C)
            Whether no other training sample fetched the row.
        drop_alone : bool
        **hyperparameters
            As for :meth:`logits`.
        """
        fetched = self._values_without(rows, labels, weights, alone, **hyperparameters)
        if drop_alone:
            return mean_over_kept_codebooks(fetched, ~alone)
        return mean_over_codebooks(fetched)

    # -- what each rule implements -------------------------------------------

    def _columns(self, n_classes):
        """Columns of the table for ``n_classes`` classes."""
        raise NotImplementedError

    def _grown_table(self, source):
        """The table for the class list that ``source`` describes (see add_classes)."""
        raise NotImplementedError

    def n_passes(self, max_iter):
        """Passes over a batch that :meth:`update` makes when asked for ``max_iter``."""
        return max_iter

    def update(self, rows, labels, weights, *, max_iter, random_state, on_pass=None,
               **hyperparameters):
        """Learn from a batch, in place; returns the number of passes made.

        Parameters
        ----------
        rows : int64 Tensor (N, C)
            Rows fetched by each sample.
        labels : int64 Tensor (N,)
            Class column of each sample.
        weights : float32 Tensor (N,) or None
            Sample weights; ``None`` is weight one.
        class_weights : float32 Tensor (n_classes,) or None, keyword
            A weight per class column (``None``: none). It is passed to
            :meth:`update`, :meth:`logits` and :meth:`values` alike, and each
            rule applies it where it belongs: in the loss, or when reading values.
        max_iter : int
            Passes over the batch, for rules that iterate.
        random_state : numpy.random.RandomState
            Source of any randomness (the batch order).
        on_pass : callable or None
            Called after each pass as ``on_pass(seconds, loss)``; ``loss`` is
            the training loss where the rule has one (computed only when
            ``on_pass`` is given), else None.
        """
        raise NotImplementedError

    def logits(self, rows, **hyperparameters):
        """Class logits of samples that fetched ``rows``: (N, n_classes)."""
        raise NotImplementedError

    def values(self, **hyperparameters):
        """The value of every key for every class: (C * K, n_classes)."""
        raise NotImplementedError

    def _values_without(self, rows, labels, weights, alone, **hyperparameters):
        """The values each sample fetched, (N, C, n_classes), in the model without
        it as far as the rule allows; never-trained values where ``alone``."""
        raise NotImplementedError
