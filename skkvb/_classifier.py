"""KeyValueBottleneckClassifier: class values on top of frozen key codebooks.

The estimator validates inputs, owns the codebook and the label set, and turns
inputs into codes; what the values are and how they learn is the engine's
value model chosen by ``value_update`` (:mod:`skkvb.engine.values`).
"""

import copy
from contextlib import nullcontext
from numbers import Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._compat import (
    HasMethods,
    Interval,
    StrOptions,
    check_sample_weight,
    fit_context,
    validate_parameter_constraints,
)
from ._device import DeviceMixin, resolve_device
from ._encoding import encode_array
from ._key_codebook import KeyCodebook
from ._labels import extend_label_set, label_kind, start_label_set
from ._persistence import all_or_nothing
from ._progress import progress_bar, write
from ._validation import Count, first_partial_fit, is_fitted, validate_features
from .engine.codes import count_usage, flat_codes, prepare_keys
from .engine.heads import project
from .engine.keys import reseed_unused_keys
from .engine.seeding import draw_seed, torch_generator
from .engine.threads import single_threaded
from .engine.values import VALUE_MODELS

__all__ = ["KeyValueBottleneckClassifier"]

# Rows encoded and decoded at a time in prediction, to bound memory.
PREDICT_CHUNK_ROWS = 4096
# Total sample weight a model may learn from: half of float32's range, so that
# class counts, their totals and SGD steps stay finite.
WEIGHT_BUDGET = float(np.finfo(np.float32).max) / 2


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


class KeyValueBottleneckClassifier(DeviceMixin, ClassifierMixin, BaseEstimator):
    """Discrete Key-Value Bottleneck classifier for streaming, class-incremental data.

    Inputs (typically embeddings of a frozen encoder) are split into heads by a
    fixed random projection; each head fetches the value of its nearest frozen
    key (see :class:`KeyCodebook`); the mean of the fetched values are the class
    logits. Only values are trained -- by default in one pass, as the
    log-smoothed class counts of each key, or with plain SGD on a
    label-smoothed cross-entropy (the paper's way) -- and a sample only ever
    updates the values it fetched: what was learned from other regions of
    input space is not overwritten, so learning new classes from a stream (no
    task boundaries, no replay) does not forget old ones.

    Parameters
    ----------
    codebook : KeyCodebook, FrozenEstimator or None, default=None
        The key codebooks. ``None`` means ``KeyCodebook(device=device,
        verbose=verbose)``.
        :meth:`fit` fits a clone of it on X without labels; to use keys fitted
        on other, unlabelled data (the paper's protocol) pass
        ``sklearn.frozen.FrozenEstimator(fitted_codebook)``, which clone and fit
        leave as it is. :meth:`partial_fit` fits it on the first batch unless it
        is already fitted. A fitted codebook is copied when training starts, so
        changing or refitting it afterwards leaves the classifier as it is.
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
    partial_fit_max_iter : int, default=1
        Epochs over the batch given to each :meth:`partial_fit` call, with
        ``value_update="sgd"`` (a batch is counted once). Codes are computed
        once per call, so several epochs cost little.
    mask_unused_keys : bool, default=True
        At prediction, snap each head to its nearest key that some training
        sample fetched (``key_usage_ > 0``), as the reference implementation
        does: never-trained values carry no information.
    device : str or torch.device, default="auto"
        Where values are trained and predictions computed; ``"auto"`` picks
        CUDA when available. A GPU that is not available falls back to the CPU
        with a warning. Results are always numpy arrays.
    random_state : int, RandomState instance or None, default=None
        Seeds the batch order and, when the codebook has no ``random_state`` of
        its own, the codebook.
    verbose : int, default=0
        When > 0, a progress bar over the epochs of value training on stderr
        (tqdm), and with SGD values the loss and time of each epoch on stdout.
    value_update : {"count", "sgd"}, default="count"
        How values are learned. ``"count"``: one pass that counts, per key,
        the classes of the training samples that fetched it; the value of
        class y is ``log((count_y + a) / (count + a * n_classes))`` with
        ``a = count_smoothing``. Exactly independent of the order of the
        samples (see Notes).
        ``"sgd"``: the paper's plain SGD on the cross-entropy.
    count_smoothing : float, default=0.1
        Additive smoothing ``a > 0`` of the counts, with
        ``value_update="count"``. Read at prediction, so it can be changed
        after training without counting again.
    reseed_unused_keys : bool, default=True
        Before each :meth:`partial_fit` call after the first, move the keys
        that no trained sample has fetched to where the new batch lies (see
        Notes, *Cold start*). Only keys this classifier fitted itself move; a
        codebook given fitted (e.g. in ``FrozenEstimator``) is never changed.

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
    of every row, a per-row constant that moves no prediction). The
    "Accuracy" page of the documentation compares counting with SGD.
    Switching ``value_update`` between :meth:`partial_fit` calls raises
    ``ValueError``; :meth:`fit` starts again in the new mode.

    *Cold start.* Without a fitted codebook, the first :meth:`partial_fit`
    call fits the keys on its batch, which in a class-incremental stream holds
    the first classes only; later classes would share the few keys near them.
    With ``reseed_unused_keys=True`` each later call first re-seeds the keys
    that no trained sample has fetched at random heads of its batch and moves
    them by five k-means steps (only those keys move), before any value is
    written for them: keys that carry values stay where they are. This costs
    about five more nearest-key searches over each batch. The keys then
    depend on the order of the stream, so counting values are exactly
    order-independent only with keys fitted beforehand (the paper's protocol,
    and the recommended one when unlabelled data is at hand). The user guide
    quotes the accuracies ``benchmarks/cold_start.py`` measures.

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

    *Hyperparameters* are checked when :meth:`fit` or :meth:`partial_fit` is
    called (``count_smoothing`` also at prediction); an invalid one raises
    :class:`~sklearn.utils._param_validation.InvalidParameterError` (a
    ``ValueError``) naming it, and the classifier is left as it was.

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

    _parameter_constraints: dict = {
        "codebook": [HasMethods(["fit", "transform", "engine_tensors"]), None],
        "learning_rate": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "max_iter": [Count()],
        "batch_size": [Count()],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "partial_fit_max_iter": [Count()],
        "mask_unused_keys": ["boolean"],
        "device": [str, torch.device, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "value_update": [StrOptions(set(VALUE_MODELS))],
        "count_smoothing": [Interval(Real, 0, None, closed="neither")],
        "reseed_unused_keys": ["boolean"],
    }

    def __init__(
        self,
        codebook=None,
        learning_rate="auto",
        max_iter=30,
        batch_size=256,
        label_smoothing=0.1,
        partial_fit_max_iter=1,
        mask_unused_keys=True,
        device="auto",
        random_state=None,
        verbose=0,
        value_update="count",
        count_smoothing=0.1,
        reseed_unused_keys=True,
    ):
        self.codebook = codebook
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.label_smoothing = label_smoothing
        self.partial_fit_max_iter = partial_fit_max_iter
        self.mask_unused_keys = mask_unused_keys
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.value_update = value_update
        self.count_smoothing = count_smoothing
        self.reseed_unused_keys = reseed_unused_keys

    def set_params(self, **params):
        """Set the parameters of this estimator and of its codebook.

        ``codebook__<name>`` works with the default ``codebook=None`` too: it
        first puts in the ``KeyCodebook(device=device, verbose=verbose)`` that
        None stands for, so ``GridSearchCV`` can search the default codebook's
        parameters.

        Parameters
        ----------
        **params : dict
            Estimator parameters, and ``codebook__<name>`` for the codebook's.

        Returns
        -------
        self : KeyValueBottleneckClassifier
            This estimator.
        """
        nested = any(key.startswith("codebook__") for key in params)
        if nested and params.get("codebook", self.codebook) is None:
            device = params.get("device", self.device)
            verbose = params.get("verbose", self.verbose)
            params = {"codebook": KeyCodebook(device=device, verbose=verbose), **params}
        return super().set_params(**params)

    # ------------------------------------------------------------------ fit

    @fit_context(prefer_skip_nested_validation=False)
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
        random_state = check_random_state(self.random_state)
        codebook, owns_keys = self._fitted_codebook(X, random_state, keep_fitted=False)
        self._random_state = random_state
        self._start(codebook, np.unique(y), fixed=True, owns_keys=owns_keys)
        self._learn(X, y, None, self.max_iter)
        return self

    @fit_context(prefer_skip_nested_validation=False)
    @all_or_nothing
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train values on one batch of a stream for ``partial_fit_max_iter`` epochs
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
        first_call = first_partial_fit(self, "classes_")
        X, y = self._validate(X, y, reset=first_call)
        sample_weight = check_sample_weight(sample_weight, X)
        if first_call:
            known, fixed = start_label_set(y, classes)
            random_state = check_random_state(self.random_state)
            codebook, owns_keys = self._fitted_codebook(X, random_state, keep_fitted=True)
            self._random_state = random_state
            self._start(codebook, known, fixed, owns_keys)
            trained_before = False
        else:
            self._check_same_value_update()
            self.classes_, source = extend_label_set(self.classes_, self._fixed_classes, y, classes)
            trained_before = source is None
            if source is not None:  # a new model: the snapshot keeps the old one whole
                self._value_model = self._value_model.add_classes(source)
            if self.reseed_unused_keys and self._owns_keys:
                self.codebook_ = self._codebook_reseeded_on(X)
        self._learn(X, y, sample_weight, self.partial_fit_max_iter, trained_before)
        return self

    def _validate(self, X, y, reset):
        X, y = validate_features(self, X, y, reset=reset)
        label_kind(y, "y")
        check_classification_targets(y)
        return X, y

    def _check_same_value_update(self):
        trained = self._value_model.name
        if self.value_update != trained:
            raise ValueError(
                f"value_update={self.value_update!r}, but this classifier was trained "
                f"with value_update={trained!r}; partial_fit cannot switch. Call fit to "
                "start again."
            )

    # ------------------------------------------------------------ codebook

    def _fitted_codebook(self, X, random_state, keep_fitted):
        """The codebook of a new model, fitted on X unless it came fitted.

        ``fit`` refits a clone of the codebook parameter (``keep_fitted=False``)
        and the first ``partial_fit`` keeps an already fitted one. A codebook
        that stays fitted is a private copy: a FrozenEstimator's clone is itself,
        so later changes to the user's codebook would otherwise leak in. An
        unfitted one without a random_state of its own is seeded from ours, so
        random_state alone makes fitting deterministic.

        Returns the codebook and whether it was fitted here: only such keys are
        the classifier's own to re-seed (``reseed_unused_keys``).
        """
        seed = random_state.randint(np.iinfo(np.int32).max)
        if self.codebook is None:
            codebook = KeyCodebook(device=self.device, verbose=self.verbose)
        else:
            codebook = clone(self.codebook)
            if is_fitted(codebook) or (keep_fitted and is_fitted(self.codebook)):
                codebook = copy.deepcopy(self.codebook)
        fits_here = not is_fitted(codebook)
        if fits_here:
            if codebook.random_state is None:
                codebook.set_params(random_state=seed)
            codebook.fit(X)
        self._check_codebook(codebook, X.shape[1])
        return codebook, fits_here

    def _codebook_reseeded_on(self, X):
        """A copy of the codebook whose keys no trained sample fetched are
        re-seeded on this batch's heads (see ``reseed_unused_keys``)."""
        codebook = copy.copy(self.codebook_)  # new arrays below: the old ones stay whole
        projection, keys = codebook.engine_tensors(self._value_model.device)
        heads = project(
            torch.as_tensor(_dense(X), dtype=torch.float32, device=keys.device),
            projection, keys.shape[0],
        )
        unused = torch.as_tensor(self.key_usage_ == 0, device=keys.device)
        generator = torch_generator(draw_seed(self._random_state))
        keys = reseed_unused_keys(keys, unused, heads, generator)
        codebook.keys_ = keys.cpu().numpy()
        # The codebook's own EMA state restarts at the new keys, as revived keys do.
        unused = unused.cpu().numpy()
        codebook.key_counts_ = np.where(unused, 1.0, codebook.key_counts_).astype(np.float32)
        codebook._key_sums = np.where(unused[..., None], codebook.keys_, codebook._key_sums)
        return codebook

    @staticmethod
    def _check_codebook(codebook, n_features):
        if codebook.projection_.shape[0] != n_features:
            raise ValueError(
                f"X has {n_features} features, but the codebook was fitted on "
                f"{codebook.projection_.shape[0]} features."
            )

    # ------------------------------------------------------------ training

    def _start(self, codebook, classes, fixed, owns_keys):
        """Fresh fitted state: the value model of ``value_update``, zero usage."""
        self.codebook_ = codebook
        self.classes_ = np.asarray(classes)
        self._fixed_classes = fixed
        self._owns_keys = owns_keys
        n_codebooks, n_keys, _ = codebook.keys_.shape
        model_class = VALUE_MODELS[self.value_update]
        self._value_model = model_class(
            n_codebooks, n_keys, len(classes), growing=not fixed,
            device=resolve_device(self.device),
        )
        self.key_usage_ = np.zeros((n_codebooks, n_keys), dtype=np.int64)
        self._weight_seen = 0.0

    def _rule_parameters(self):
        """The parameters the value rule reads, by name, from this estimator."""
        return {name: getattr(self, name) for name in self._value_model.hyperparameters}

    def _learn(self, X, y, sample_weight, max_iter, trained_before=False):
        """X -> codes (once) -> the value model's update; then key usage.

        ``trained_before``: the model existed before this call, so the rows the
        batch fetches are put back if training raises (a new model is simply
        dropped with the rest of the call's state).
        """
        batch_weight = len(y) if sample_weight is None else np.sum(sample_weight, dtype=float)
        self._check_weight_budget(batch_weight)
        model = self._value_model
        device = model.device
        codes = self._codes(X)
        rows = flat_codes(codes, model.n_keys)
        labels = torch.as_tensor(np.searchsorted(self.classes_, y), device=device)
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(sample_weight, dtype=torch.float32, device=device)
        guard = model.restored_on_error(rows) if trained_before else nullcontext()
        bar = progress_bar(model.n_passes(max_iter), "values", "epoch", self.verbose)
        with single_threaded(), guard, bar:
            self.n_iter_ = model.update(
                rows, labels, weights, max_iter=max_iter, random_state=self._random_state,
                on_pass=self._pass_reporter(bar) if self.verbose else None,
                **self._rule_parameters(),
            )
            used = codes if weights is None else codes[weights > 0]
            self.key_usage_ = self.key_usage_ + count_usage(used, model.n_keys).cpu().numpy()
        self._weight_seen += float(batch_weight)

    @staticmethod
    def _pass_reporter(bar):
        """Advance the bar after each pass; print the loss where the rule has one."""

        def on_pass(seconds, loss):
            if loss is not None:
                write(f"-- Epoch {bar.n + 1}: loss {loss:.4f}, {seconds:.4f} s")
            bar.update()

        return on_pass

    def _check_weight_budget(self, batch_weight):
        """Refuse weights whose total would overflow the float32 value table: a
        key's count (and an SGD step) grows with the weight of its samples."""
        if self._weight_seen + batch_weight > WEIGHT_BUDGET:
            raise ValueError(
                f"sample_weight adds up to {batch_weight:.3g} in this call and "
                f"{self._weight_seen:.3g} before it, beyond the {WEIGHT_BUDGET:.3g} that "
                "the float32 value table holds; rescale the weights."
            )

    # ---------------------------------------------------------- prediction

    def _codes(self, X, key_mask=None):
        return self._chunk_encoder(key_mask)(X)

    def _chunk_encoder(self, key_mask):
        """Codes of one chunk of X, with the keys moved and prepared once per call."""
        projection, keys = self.codebook_.engine_tensors(self._value_model.device)
        prepared = prepare_keys(keys, key_mask)
        return lambda chunk: encode_array(chunk, projection, keys, prepared=prepared)

    def _key_mask(self):
        if not self.mask_unused_keys:
            return None
        used = torch.as_tensor(self.key_usage_ > 0, device=self._value_model.device)
        # A codebook no sample has fetched from (all weights zero) stays unmasked.
        return used | ~used.any(1, keepdim=True)

    def _prediction_parameters(self):
        """The rule's parameters, checked again: some are read at prediction and
        may have been set since fit."""
        parameters = self._rule_parameters()
        validate_parameter_constraints(
            {name: self._parameter_constraints[name] for name in parameters},
            parameters,
            caller_name=type(self).__name__,
        )
        return parameters

    def _logits(self, X):
        """Logits of the classes of ``classes_``, numpy (N, n_classes)."""
        check_is_fitted(self)
        X = validate_features(self, X, reset=False)
        parameters = self._prediction_parameters()
        encode_chunk = self._chunk_encoder(self._key_mask())
        out = np.empty((X.shape[0], len(self.classes_)), dtype=np.float32)
        for start in range(0, X.shape[0], PREDICT_CHUNK_ROWS):
            codes = encode_chunk(X[start : start + PREDICT_CHUNK_ROWS])
            rows = flat_codes(codes, self._value_model.n_keys)
            logits = self._value_model.logits(rows, **parameters)
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
        table = self._value_model.values(**self._prediction_parameters())
        return table.cpu().numpy().copy().reshape(n_codebooks, n_keys, -1)

    @property
    def class_counts_(self):
        check_is_fitted(self)
        n_codebooks, n_keys, _ = self.codebook_.keys_.shape
        try:
            counts = self._value_model.class_counts()
        except AttributeError:
            raise AttributeError("class_counts_ exists with value_update='count' only.") from None
        return counts.cpu().numpy().copy().reshape(n_codebooks, n_keys, -1)

    @property
    def t_(self):
        check_is_fitted(self)
        return self._value_model.n_steps

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = True
        return tags
