"""KeyValueBottleneckClassifier: class values on top of frozen key codebooks."""

import copy
import numbers
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    FLOAT_DTYPES,
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._codebook import count_usage, prepare_keys
from ._device import resolve_device, single_threaded, state_to_cpu, state_to_device
from ._key_codebook import KeyCodebook, check_float32_range, encode_array
from ._persistence import all_or_nothing, tag_state, untag_state
from ._validation import check_fraction, check_positive_int
from ._values import (
    add_counts,
    count_values,
    decode,
    decode_counts,
    decode_stable,
    flat_codes,
    sgd_step,
    zero_values,
)

__all__ = ["KeyValueBottleneckClassifier", "auto_learning_rate"]

# Step size per codebook of learning_rate="auto" (see auto_learning_rate).
AUTO_LEARNING_RATE_PER_CODEBOOK = 1.0
# Rows encoded and decoded at a time in prediction, to bound memory.
PREDICT_CHUNK_ROWS = 4096
VALUE_UPDATES = ("sgd", "count")


def auto_learning_rate(n_codebooks):
    """The learning rate that ``learning_rate="auto"`` uses: ``1.0 * C``.

    Logits are the mean of C fetched values, so a plain SGD step of size lr
    moves each logit by only about lr / C. Scaling lr with C gives every logit
    a step of about 1 whatever the number of codebooks; the paper's fixed 0.3
    (a logit step of 0.3 / 256 with 256 codebooks) is why it needs thousands
    of epochs.
    """
    return AUTO_LEARNING_RATE_PER_CODEBOOK * n_codebooks


def _is_fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _label_kind(labels, name):
    """``"number"`` or ``"string"``: what ``labels`` hold; a ValueError if they mix."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "biuf":
        return "number"
    if labels.dtype.kind in "US":
        return "string"
    types = {type(label) for label in labels.ravel()}
    kinds = {
        "string" if issubclass(t, str) else "number" if issubclass(t, numbers.Number) else t
        for t in types
    }
    if len(kinds) > 1 or (kinds and not kinds <= {"string", "number"}):
        names = ", ".join(sorted(t.__name__ for t in types))
        raise ValueError(
            f"{name} has labels of types {names}; labels must be all numbers or all "
            "strings."
        )
    return kinds.pop() if kinds else "number"


@contextmanager
def _values_restored_on_error(values, rows):
    """Undo in-place SGD on ``values`` when the block raises (KeyboardInterrupt too).

    Only the rows in ``rows`` can change, so those are copied -- or the whole
    table when ``rows`` lists more entries than it has rows: at most one table,
    once per call. They are copied back only on failure.
    """
    flat = rows.reshape(-1)
    if flat.numel() < values.shape[0]:
        saved = values.index_select(0, flat)
    else:
        flat, saved = None, values.clone()
    try:
        yield
    except BaseException:
        if flat is None:
            values.copy_(saved)
        else:  # a row listed twice was saved twice with the same value: order is moot
            values.index_copy_(0, flat, saved)
        raise


class KeyValueBottleneckClassifier(ClassifierMixin, BaseEstimator):
    """Discrete Key-Value Bottleneck classifier for streaming, class-incremental data.

    Inputs (typically embeddings of a frozen encoder) are split into heads by a
    fixed random projection; each head fetches the value of its nearest frozen
    key (see :class:`KeyCodebook`); the mean of the fetched values are the class
    logits. Only values are trained -- by default in one pass, as the
    log-smoothed class counts of each key, or with plain SGD on a
    label-smoothed cross-entropy (the paper's way) -- and a sample only ever
    updates the values it fetched: what was learned from other regions of input space is not overwritten, so
    learning new classes from a stream (no task boundaries, no replay) does not
    forget old ones.

    Parameters
    ----------
    codebook : KeyCodebook, FrozenEstimator or None, default=None
        The key codebooks. ``None`` means ``KeyCodebook(device=device)``.
        :meth:`fit` fits a clone of it on X without labels; to use keys fitted
        on other, unlabelled data (the paper's protocol) pass
        ``sklearn.frozen.FrozenEstimator(fitted_codebook)``, which clone and fit
        leave as it is. :meth:`partial_fit` fits it on the first batch unless it
        is already fitted.
    learning_rate : float or "auto", default="auto"
        SGD step size, with ``value_update="sgd"``. ``"auto"`` is
        ``1.0 * n_codebooks`` (see Notes).
    max_iter : int, default=30
        Epochs over the data in :meth:`fit`, with ``value_update="sgd"``
        (counting needs one pass).
    batch_size : int, default=256
        Samples per SGD step, with ``value_update="sgd"``.
    label_smoothing : float, default=0.1
        Label smoothing of the cross-entropy, in [0, 1), with
        ``value_update="sgd"``.
    partial_fit_epochs : int, default=1
        Epochs over the batch given to each :meth:`partial_fit` call, with
        ``value_update="sgd"`` (a batch is counted once). Codes are computed
        once per call, so several epochs cost little.
    mask_unused_keys : bool, default=True
        At prediction, snap each head to its nearest key that some training
        sample fetched (``key_usage_ > 0``), as the reference implementation
        does: never-trained values carry no information.
    device : str or torch.device, default="auto"
        Where values are trained and predictions computed; ``"auto"`` picks
        CUDA when available. Results are always numpy arrays.
    random_state : int, RandomState instance or None, default=None
        Seeds the batch order and, when the codebook has no ``random_state`` of
        its own, the codebook.
    verbose : int, default=0
        Print the loss and time of each epoch when > 0 (SGD only).
    value_update : {"count", "sgd"}, default="count"
        How values are learned. ``"count"``: one pass that counts, per key,
        the classes of the training samples that fetched it; the value of
        class y is ``log((count_y + a) / (count + a * n_classes))`` with
        ``a = count_smoothing``. Exactly independent of the order of the
        samples, and the most accurate setting we measured (see Notes).
        ``"sgd"``: the paper's plain SGD on the cross-entropy.
    count_smoothing : float, default=0.1
        Additive smoothing ``a > 0`` of the counts, with
        ``value_update="count"``. Read at prediction, so it can be changed
        after training without counting again.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen (or given) so far, sorted.
    codebook_ : KeyCodebook or FrozenEstimator
        The fitted codebook the codes come from.
    key_usage_ : ndarray of shape (n_codebooks, n_keys), int64
        How many training samples fetched each key (samples of zero weight
        excluded).
    values_ : ndarray of shape (n_codebooks, n_keys, n_classes)
        A copy of the value table, one column per class of ``classes_``; with
        ``value_update="count"`` the values the counts give.
    class_counts_ : ndarray of shape (n_codebooks, n_keys, n_classes)
        With ``value_update="count"`` only: the summed sample weight of each
        class that fetched each key.
    n_iter_ : int
        Epochs run by the last call of :meth:`fit` or :meth:`partial_fit`
        (1 with ``value_update="count"``).
    t_ : int
        SGD steps taken so far (0 with ``value_update="count"``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string feature names.

    See Also
    --------
    KeyCodebook : The projection and keys this classifier reads values with.

    Notes
    -----
    *Growing label sets.* Without ``classes``, :meth:`partial_fit` accepts new
    labels as they arrive. Training then keeps one extra "not yet seen" column
    in the softmax: under a fixed softmax every unseen class receives the same
    negative updates, so that column is exactly what an unseen class's values
    would be. A new class starts as a copy of it, and it is left out of every
    prediction. Zero-initialising new classes instead would miss those updates
    and break the paper's class-incremental = i.i.d. property. With ``classes``
    given on the first call no extra column is used (the paper's setting), and
    unknown labels raise ``ValueError``.

    *Counting values.* Because keys are frozen, the codes of a sample never
    change, and the value table is a model on sparse one-hot features. With
    ``value_update="count"`` the classifier keeps, per key, the summed weight
    of each class of the samples that fetched it -- one scatter-add per call
    -- and decodes with the log-smoothed class frequencies above, averaged
    over codebooks like SGD-trained values. Fitting is a single pass (the
    epoch parameters are ignored); :meth:`partial_fit` adds counts, so a
    stream of batches, in any order and any split, ends with exactly the
    counts of one call on all the data: class-incremental training *is*
    i.i.d. training. Sample weights add up like repeated samples. Growing
    label sets need no "not yet seen" column: a class's values depend only
    on its own counts and each key's total, and a class not yet seen has
    count zero everywhere, so it enters as a zero column -- exactly the
    column it would have had from the start. Only rows of fetched keys
    change, as with SGD (adding a class changes the ``a * n_classes`` term
    of every row, a per-row constant that moves no prediction). Counting is
    the default because it was the most accurate value rule on every dataset
    of our exploration (digits, MNIST and Fashion-MNIST embeddings; see the
    "Accuracy" page of the documentation), with no epochs to tune.
    Switching ``value_update`` between :meth:`partial_fit` calls raises
    ``ValueError``; :meth:`fit` starts again in the new mode.

    *Learning rate.* With mean pooling over C codebooks a step of size lr moves
    a logit by about lr / C; ``"auto"`` uses lr = C, a logit step of about one
    whatever C (the paper's lr = 0.3 gives 0.3 / C, hence its thousands of
    epochs).

    *Sample weights* are accepted by :meth:`partial_fit` (the loss is the batch
    mean of weight times cross-entropy; with counting, a weight is added to
    the counts, so an integer weight equals repeating the sample). :meth:`fit`
    trains by minibatch SGD in a shuffled order, where weights are not
    equivalent to repeating samples, and fits the codebook on X, where they
    would not be either, so it does not take them.

    *Inputs.* X may be a dense array of any float or integer dtype (computed in
    float32), a DataFrame (its column names are checked at prediction) or a
    scipy sparse matrix (densified a few thousand rows at a time). Labels are
    all numbers or all strings, and later batches keep the type of ``classes_``.

    *Failures and interruptions.* A call of :meth:`fit` or :meth:`partial_fit`
    that raises -- invalid input, a ``KeyboardInterrupt`` in the middle of an
    epoch -- leaves the classifier exactly as it was before the call: a fitted
    model keeps predicting as before and can go on with :meth:`partial_fit`.
    For this, :meth:`partial_fit` copies the value rows its batch fetches (at
    most the whole table) once per call; :meth:`fit` trains a new table and
    needs no copy.

    *Persistence.* Pickles (and joblib dumps) hold every tensor on the CPU and
    name the device it came from: loaded where that GPU is missing, the
    classifier runs on the CPU, with a warning. They carry a state-format tag;
    loading one written in a format this version cannot read raises
    ``ValueError``.

    References
    ----------
    .. [1] F. Träuble, A. Goyal, N. Rahaman, M. Mozer, K. Kawaguchi, Y. Bengio
       and B. Schölkopf, "Discrete Key-Value Bottleneck", ICML 2023.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skkvb import KeyCodebook, KeyValueBottleneckClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> codebook = KeyCodebook(n_codebooks=16, n_keys=32, key_dim=2, random_state=0)
    >>> clf = KeyValueBottleneckClassifier(codebook=codebook, random_state=0)
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    >>> clf.predict_proba(X[:1]).shape
    (1, 3)
    >>> paper = KeyValueBottleneckClassifier(
    ...     codebook=codebook, value_update="sgd", random_state=0
    ... )
    >>> paper.fit(X, y).score(X, y) > 0.9
    True
    """

    def __init__(
        self,
        codebook=None,
        learning_rate="auto",
        max_iter=30,
        batch_size=256,
        label_smoothing=0.1,
        partial_fit_epochs=1,
        mask_unused_keys=True,
        device="auto",
        random_state=None,
        verbose=0,
        value_update="count",
        count_smoothing=0.1,
    ):
        self.codebook = codebook
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.label_smoothing = label_smoothing
        self.partial_fit_epochs = partial_fit_epochs
        self.mask_unused_keys = mask_unused_keys
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.value_update = value_update
        self.count_smoothing = count_smoothing

    # ------------------------------------------------------------------ fit

    @all_or_nothing
    def fit(self, X, y):
        """Fit the codebook on X without labels, then train values from zero
        (``max_iter`` epochs of SGD, or one pass of counting).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : KeyValueBottleneckClassifier
            The fitted classifier.
        """
        X, y = self._validate(X, y, reset=True)
        device = self._check_params()
        random_state = check_random_state(self.random_state)
        codebook = self._new_codebook(random_state)
        if not _is_fitted(codebook):
            codebook.fit(X)
        self._check_codebook(codebook, X.shape[1])
        classes = np.unique(y)
        self._random_state = random_state
        self._start(codebook, classes, growing=False, device=device)
        self._train(X, np.searchsorted(classes, y), None, self.max_iter)
        return self

    @all_or_nothing
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train values on one batch of a stream for ``partial_fit_epochs`` epochs
        (with ``value_update="count"``: add the batch's counts, one pass).

        Codes of the batch are computed once. The first call fits the codebook
        on this batch unless it is already fitted.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            A batch of training data.
        y : array-like of shape (n_samples,)
            Its class labels.
        classes : array-like of shape (n_classes,), default=None
            All classes the stream will contain, on the first call only. With
            it, a label outside ``classes`` raises ``ValueError``; without it,
            new labels are added as they arrive (see Notes).
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights; ``None`` means weight one.

        Returns
        -------
        self : KeyValueBottleneckClassifier
            The updated classifier.
        """
        first_call = not hasattr(self, "classes_")
        X, y = self._validate(X, y, reset=first_call)
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=np.float32, ensure_non_negative=True,
            allow_all_zero_weights=True,
        )
        device = self._check_params()
        if first_call:
            random_state = check_random_state(self.random_state)
            fixed = classes is not None
            known = self._check_classes(classes, y) if fixed else np.unique(y)
            self._check_labels(y, known, fixed)
            codebook = self._codebook_for_stream(X, random_state)
            self._random_state = random_state
            self._start(codebook, known, growing=not fixed, device=device)
            in_place = False
        else:
            self._check_same_value_update()
            self._check_label_kind(y)
            self._check_later_classes(classes)
            self._check_labels(y, self.classes_, not self._growing)
            in_place = not self._add_classes(np.setdiff1d(np.unique(y), self.classes_))
        labels = np.searchsorted(self.classes_, y)
        self._train(X, labels, sample_weight, self.partial_fit_epochs, in_place=in_place)
        return self

    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=FLOAT_DTYPES, reset=reset)
        _label_kind(y, "y")
        check_classification_targets(y)
        return check_float32_range(X), y

    def _check_params(self):
        if not (isinstance(self.learning_rate, str) and self.learning_rate == "auto"):
            check_scalar(
                self.learning_rate, "learning_rate", numbers.Real,
                min_val=0.0, include_boundaries="neither",
            )
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.batch_size, "batch_size")
        check_fraction(self.label_smoothing, "label_smoothing", closed_right=False)
        check_positive_int(self.partial_fit_epochs, "partial_fit_epochs")
        check_scalar(self.verbose, "verbose", numbers.Integral, min_val=0)
        check_scalar(self.mask_unused_keys, "mask_unused_keys", (bool, np.bool_))
        if not (isinstance(self.value_update, str) and self.value_update in VALUE_UPDATES):
            raise ValueError(
                f"value_update must be one of {', '.join(map(repr, VALUE_UPDATES))}; "
                f"got {self.value_update!r}."
            )
        self._check_count_smoothing()
        if self.codebook is not None and not hasattr(self.codebook, "engine_tensors"):
            raise TypeError(
                "codebook must be a KeyCodebook, a FrozenEstimator wrapping one, "
                f"or None; got {type(self.codebook).__name__}."
            )
        return resolve_device(self.device)

    def _check_count_smoothing(self):
        check_scalar(
            self.count_smoothing, "count_smoothing", numbers.Real,
            min_val=0.0, max_val=np.inf, include_boundaries="neither",
        )

    def _check_same_value_update(self):
        trained = "count" if self._counting() else "sgd"
        if self.value_update != trained:
            raise ValueError(
                f"value_update={self.value_update!r}, but this classifier was trained "
                f"with value_update={trained!r}; partial_fit cannot switch. Call fit to "
                "start again."
            )

    def _new_codebook(self, random_state):
        """A clone of the codebook parameter, seeded from our random_state when
        it has none of its own (so random_state alone makes fit deterministic)."""
        if self.codebook is None:
            codebook = KeyCodebook(device=self.device)
        else:
            codebook = clone(self.codebook)
        seed = random_state.randint(np.iinfo(np.int32).max)
        if not _is_fitted(codebook) and codebook.random_state is None:
            codebook.set_params(random_state=seed)
        return codebook

    def _codebook_for_stream(self, X, random_state):
        """First partial_fit: keep an already fitted codebook (a private copy,
        so later changes to the parameter do not leak in), else fit on X."""
        if self.codebook is not None and _is_fitted(self.codebook):
            random_state.randint(np.iinfo(np.int32).max)  # same stream as _new_codebook
            codebook = clone(self.codebook)
            if codebook is not self.codebook:  # a plain fitted codebook: clone dropped its keys
                codebook = copy.deepcopy(self.codebook)
        else:
            codebook = self._new_codebook(random_state)
            codebook.fit(X)
        self._check_codebook(codebook, X.shape[1])
        return codebook

    @staticmethod
    def _check_codebook(codebook, n_features):
        if codebook.projection_.shape[0] != n_features:
            raise ValueError(
                f"X has {n_features} features, but the codebook was fitted on "
                f"{codebook.projection_.shape[0]} features."
            )

    @staticmethod
    def _check_classes(classes, y):
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError(
                f"classes must be a non-empty 1-D array of labels; got shape {classes.shape}."
            )
        kind, y_kind = _label_kind(classes, "classes"), _label_kind(y, "y")
        if kind != y_kind:
            raise ValueError(f"classes holds {kind} labels, but y holds {y_kind} labels.")
        return np.unique(classes)

    def _check_label_kind(self, y):
        kind, known = _label_kind(y, "y"), _label_kind(self.classes_, "classes_")
        if kind != known:
            raise ValueError(
                f"y holds {kind} labels, but the classes seen so far are {known}s: "
                f"{self.classes_.tolist()[:10]}."
            )

    @staticmethod
    def _check_labels(y, known, fixed):
        if fixed:
            unknown = np.setdiff1d(np.unique(y), known)
            if unknown.size:
                raise ValueError(
                    f"y contains labels {unknown.tolist()} that are not in classes "
                    f"{np.asarray(known).tolist()}."
                )

    def _check_later_classes(self, classes):
        if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                "classes may only be given on the first call to partial_fit, or "
                f"equal to classes_ {self.classes_.tolist()}; got {np.unique(classes).tolist()}."
            )

    # -------------------------------------------------------- value state

    def _start(self, codebook, classes, growing, device):
        """Fresh fitted state: zero values (or zero counts), zero usage."""
        self.codebook_ = codebook
        self.classes_ = np.asarray(classes)
        self._growing = growing
        n_codebooks, n_keys, _ = codebook.keys_.shape
        # Drop the table of a previous fit in the other mode: the one that
        # exists says which mode the classifier was trained in.
        vars(self).pop("_values", None)
        vars(self).pop("_counts", None)
        if self.value_update == "count":  # a class never seen has zero counts: no extra column
            self._counts = zero_values(n_codebooks, n_keys, len(classes), device)
        else:
            n_outputs = len(classes) + int(growing)
            self._values = zero_values(n_codebooks, n_keys, n_outputs, device)
        self.key_usage_ = np.zeros((n_codebooks, n_keys), dtype=np.int64)
        self.t_ = 0
        self.n_iter_ = 0

    def _add_classes(self, new_classes):
        """Insert new classes in sorted position, each a copy of the unseen column
        (of zeros, for counts).

        Returns whether it did (the table is then a new tensor).
        """
        if new_classes.size == 0:
            return False
        classes = np.union1d(self.classes_, new_classes)
        table = self._table()
        unseen_column = len(self.classes_)
        if self._counting():
            table = torch.cat([table, table.new_zeros(table.shape[0], 1)], dim=1)
        source = np.where(
            np.isin(classes, self.classes_),
            np.searchsorted(self.classes_, classes),
            unseen_column,
        )
        if self._counting():
            self._counts = table[:, torch.as_tensor(source, device=table.device)]
        else:
            source = np.append(source, unseen_column)
            self._values = table[:, torch.as_tensor(source, device=table.device)]
        self.classes_ = classes
        return True

    def _counting(self):
        """Whether the fitted table holds class counts (value_update="count")."""
        return hasattr(self, "_counts")

    def _table(self):
        """The fitted tensor: class counts, or the SGD-trained values."""
        return self._counts if self._counting() else self._values

    # ------------------------------------------------------------ training

    def _learning_rate(self):
        if isinstance(self.learning_rate, str):
            return auto_learning_rate(self.codebook_.keys_.shape[0])
        return float(self.learning_rate)

    def _codes(self, X, key_mask=None):
        return self._chunk_encoder(key_mask)(X)

    def _chunk_encoder(self, key_mask):
        """Codes of one chunk of X, with the keys moved and prepared once per call."""
        projection, keys = self.codebook_.engine_tensors(self._table().device)
        prepared = prepare_keys(keys, key_mask)
        return lambda chunk: encode_array(chunk, projection, keys, prepared=prepared)

    def _train(self, X, labels, sample_weight, n_epochs, in_place=False):
        """SGD on the values for ``n_epochs`` epochs over X (or one pass of
        counting: ``n_epochs`` is then ignored); codes computed once.

        ``in_place``: the table existed before this call, so the rows the batch
        fetches are put back if training raises (a new table is simply dropped).
        """
        table = self._table()
        device = table.device
        n_keys = self.codebook_.keys_.shape[1]
        codes = self._codes(X)
        rows = flat_codes(codes, n_keys)
        labels = torch.as_tensor(labels, dtype=torch.int64, device=device)
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(sample_weight, dtype=torch.float32, device=device)
        guard = _values_restored_on_error(table, rows) if in_place else nullcontext()
        with single_threaded(), guard:
            if self._counting():
                add_counts(self._counts, rows, labels, weights)
                n_epochs = 1
            else:
                self._sgd_epochs(rows, labels, weights, self._learning_rate(), n_epochs)
            used = codes if weights is None else codes[weights > 0]
            self.key_usage_ = self.key_usage_ + count_usage(used, n_keys).cpu().numpy()
        self.n_iter_ = n_epochs

    def _sgd_epochs(self, rows, labels, weights, learning_rate, n_epochs):
        device = self._values.device
        n_samples = rows.shape[0]
        for epoch in range(n_epochs):
            tic = time.perf_counter()
            order = torch.as_tensor(self._random_state.permutation(n_samples), device=device)
            for start in range(0, n_samples, self.batch_size):
                batch = order[start : start + self.batch_size]
                sgd_step(
                    self._values, rows[batch], labels[batch], learning_rate,
                    self.label_smoothing, None if weights is None else weights[batch],
                )
                self.t_ += 1
            if self.verbose:
                self._report_epoch(epoch, rows, labels, time.perf_counter() - tic)

    def _report_epoch(self, epoch, rows, labels, seconds):
        logits = decode(self._values, rows)
        loss = torch.nn.functional.cross_entropy(
            logits, labels, label_smoothing=self.label_smoothing
        )
        print(f"-- Epoch {epoch + 1}: loss {loss.item():.4f}, {seconds:.4f} s", flush=True)

    # ---------------------------------------------------------- prediction

    def _key_mask(self):
        if not self.mask_unused_keys:
            return None
        used = torch.as_tensor(self.key_usage_ > 0, device=self._table().device)
        # A codebook no sample has fetched from (all weights zero) stays unmasked.
        return used | ~used.any(1, keepdim=True)

    def _logits(self, X):
        """Logits of the known classes (the unseen column dropped), numpy (N, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=FLOAT_DTYPES, reset=False)
        X = check_float32_range(X)
        n_keys = self.codebook_.keys_.shape[1]
        key_mask = self._key_mask()
        n_classes = len(self.classes_)
        if self._counting():
            self._check_count_smoothing()
            smoothing = float(self.count_smoothing)
            decoder = lambda rows: decode_counts(self._counts, rows, smoothing)  # noqa: E731
        else:
            decoder = lambda rows: decode_stable(self._values, rows)  # noqa: E731
        encode_chunk = self._chunk_encoder(key_mask)
        out = np.empty((X.shape[0], n_classes), dtype=np.float32)
        for start in range(0, X.shape[0], PREDICT_CHUNK_ROWS):
            codes = encode_chunk(X[start : start + PREDICT_CHUNK_ROWS])
            logits = decoder(flat_codes(codes, n_keys))[:, :n_classes]
            out[start : start + PREDICT_CHUNK_ROWS] = logits.cpu().numpy()
        return out

    def decision_function(self, X):
        """Class logits: the mean of the values each sample fetches.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            For two classes, the logit of ``classes_[1]`` minus that of
            ``classes_[0]``; otherwise one column per class of ``classes_``.
        """
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict(self, X):
        """Predict the class of each sample.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, drawn from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[self._logits(X).argmax(1)]

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits over ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, columns in the order of ``classes_``.
        """
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns in the order of ``classes_``.
        """
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(1, keepdims=True))

    @property
    def values_(self):
        check_is_fitted(self)
        n_codebooks, n_keys, _ = self.codebook_.keys_.shape
        if self._counting():
            self._check_count_smoothing()
            table = count_values(self._counts, float(self.count_smoothing)).cpu().numpy()
        else:
            table = self._values[:, : len(self.classes_)].cpu().numpy().copy()
        return table.reshape(n_codebooks, n_keys, -1)

    @property
    def class_counts_(self):
        check_is_fitted(self)
        if not self._counting():
            raise AttributeError("class_counts_ exists with value_update='count' only.")
        n_codebooks, n_keys, _ = self.codebook_.keys_.shape
        return self._counts.cpu().numpy().copy().reshape(n_codebooks, n_keys, -1)

    # --------------------------------------------------------- persistence

    def __getstate__(self):
        """Pickle with every tensor on the CPU (loads on machines without a GPU)
        and the state format tagged."""
        return tag_state(state_to_cpu(super().__getstate__()))

    def __setstate__(self, state):
        state, _ = state_to_device(untag_state(state, type(self).__name__))
        # Written before value_update existed: the SGD-trained model it is.
        state.setdefault("value_update", "sgd")
        state.setdefault("count_smoothing", 1.0)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = True
        return tags
