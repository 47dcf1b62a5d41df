"""KeyValueBottleneckClassifier: class values on top of frozen key codebooks.

The estimator validates inputs, owns the codebook and the label set, and turns
inputs into codes; what the values are and how they learn is the engine's
value model chosen by ``value_update`` (:mod:`skkvb.engine.values`).
"""

from __future__ import annotations

from contextlib import nullcontext
from numbers import Real
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._bottleneck import WEIGHT_BUDGET, KeyValueBottleneckBase, positive_weight_rows
from ._calibration import CalibrationSample
from ._class_weight import class_totals, class_weights, grown_totals
from ._compat import (
    HasMethods,
    Interval,
    StrOptions,
    check_sample_weight,
    fit_context,
    validate_parameter_constraints,
)
from ._device import DeviceMixin, resolve_device
from ._doc_link import DocLinkMixin
from ._labels import extend_label_set, label_kind, label_positions, start_label_set
from ._persistence import all_or_nothing
from ._progress import progress_bar, write
from ._threads import N_JOBS_CONSTRAINT, uses_n_jobs
from ._typing import ArrayLike, Device, MatrixLike, RandomStateLike
from ._validation import Count, first_partial_fit, validate_features
from ._encoding import head_distances_of_array
from ._residuals import residuals_of_array
from .engine.codes import count_usage, flat_codes
from .engine.novelty import typicality
from .engine.threads import single_threaded
from .engine.values import DECODER_MODELS, VALUE_MODELS

__all__ = ["KeyValueBottleneckClassifier"]

# Rows encoded and decoded at a time in prediction, to bound memory: at most
# PREDICT_CHUNK_ROWS, fewer (not below PREDICT_MIN_ROWS) where the values a
# chunk gathers, (rows, codebooks, classes) float32, would pass PREDICT_BLOCK_BYTES.
PREDICT_CHUNK_ROWS = 4096
PREDICT_MIN_ROWS = 256
PREDICT_BLOCK_BYTES = 64 * 2**20
# Non-integer weights were summed in float32: an unlearned count at most this
# fraction of the weight taken from it below zero is rounding, not a sample
# that was never learned.
UNLEARN_RTOL = 1e-3


class KeyValueBottleneckClassifier(
    DocLinkMixin, DeviceMixin, KeyValueBottleneckBase, ClassifierMixin, BaseEstimator
):
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
    value_update : {"count", "sgd", "count-residual"}, default="count"
        How values are learned. ``"count"``: one pass that counts, per key,
        the classes of the training samples that fetched it; the value of
        class y is ``log((count_y + a) / (count + a * n_classes))`` with
        ``a = count_smoothing``. Exactly independent of the order of the
        samples (see Notes).
        ``"sgd"``: the paper's plain SGD on the cross-entropy.
        ``"count-residual"`` (opt-in): counting, plus per key and class the
        sum of the residuals ``head - key``; each codebook adds a local
        nearest-class-mean score, and their posteriors are averaged
        (``skkvb.engine.values.residual``; "Accuracy" page, round 2). As
        order-independent as counting up to float rounding; class weights
        multiply the class priors; ``temperature="auto"`` is fitted on the
        counts' logits only (ECE 0.013 / 0.025 / 0.016 on digits / MNIST /
        Fashion-MNIST embeddings, counting's 0.006 / 0.018 / 0.022; "Accuracy"
        page); ``unlearn`` refuses it.
    count_smoothing : float, default=0.1
        Additive smoothing ``a > 0`` of the counts, with
        ``value_update="count"``. Read at prediction, so it can be changed
        after training without counting again. With either rule, also the
        smoothing of the key counts in :meth:`score_samples`.
    reseed_unused_keys : bool, default=True
        Before each :meth:`partial_fit` call after the first, move the keys
        that no trained sample has fetched to where the new batch lies (see
        Notes, *Cold start*). Only keys this classifier fitted itself move; a
        codebook given fitted (e.g. in ``FrozenEstimator``) is never changed.
    temperature : float or "auto", default="auto"
        Probabilities are ``softmax(logits / temperature_)``; decisions
        (:meth:`predict`, :meth:`decision_function`) do not depend on it. A
        float is used as it is. ``"auto"`` fits it to the log-loss of held-out
        logits of a hashed subsample of the training points -- exact
        leave-one-out with counting values -- when probabilities are first
        asked for (see Notes, *Probabilities*). Read at prediction, so it can
        be changed after training.
    class_weight : dict, "balanced" or None, default=None
        A weight per class, multiplying the sample weights. ``None``: one for
        every class. A dict ``{label: weight}`` (finite, >= 0): those classes
        get their weight, the others one; a label outside a fixed class list
        (:meth:`fit`, or ``classes`` given) raises ``ValueError``, one not seen
        yet in a growing list applies once its class arrives. ``"balanced"``:
        class j weighs ``W / (n_seen * W_j)``, with ``W_j`` its summed sample
        weight so far (``class_count_``), ``W`` the total and ``n_seen`` the
        number of classes seen. With ``value_update="count"`` it is read at
        prediction, from everything seen; with ``"sgd"`` it weighs each batch
        as it is learned (see Notes, *Sample and class weights*).
    n_jobs : int or None, default=None
        CPU threads torch uses during training, prediction and
        :meth:`unlearn`, and while fitting a codebook whose ``n_jobs`` is
        None (see Notes, *Threads*). ``None`` means 1 -- several threads slow
        down badly on a busy machine -- unless in a
        ``joblib.parallel_config(n_jobs=k)`` context (``k``), and never more
        than an outer limit sets (``OMP_NUM_THREADS``, e.g. in a joblib worker;
        ``threadpoolctl.threadpool_limits``). ``-1`` means all cores, ``k > 0``
        ``k`` threads. torch's own setting is put back after each call.
    decoder : {"mean", "linear"}, default="mean"
        How the fetched values become logits. ``"mean"``: their mean over
        codebooks, the paper's non-parametric decoder, under which a sample
        changes only the values it fetched. ``"linear"``: the paper's
        ablation, a learned linear layer over the fetched values that starts
        as the mean and is trained by SGD together with them; it needs
        ``value_update="sgd"``. The decoder is shared by every input, so a
        class-incremental stream overwrites it (see Notes, *Parametric
        decoder*).
    decoder_learning_rate : float or "auto", default="auto"
        SGD step size of the decoder's weights and bias, with
        ``decoder="linear"``. ``"auto"`` is ``learning_rate / n_codebooks**2``
        (``1 / n_codebooks`` with ``learning_rate="auto"``): the bias, which
        every sample moves, then moves the logits as far as a value that every
        sample fetched would. Larger steps fit the decoder more closely and
        forget faster.

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
        ``value_update="count"`` the values the counts give (class-weighted).
    class_counts_ : ndarray of shape (n_codebooks, n_keys, n_classes)
        With ``value_update="count"`` only: the summed sample weight of each
        class that fetched each key (class weights are not in it).
    class_count_ : ndarray of shape (n_classes,), float64
        The summed sample weight of each class of ``classes_`` seen so far,
        which ``class_weight="balanced"`` is computed from.
    n_iter_ : int
        Epochs run by the last call of :meth:`fit` or :meth:`partial_fit`
        (1 with ``value_update="count"``).
    t_ : int
        SGD steps taken so far (0 with ``value_update="count"``).
    temperature_ : float
        The temperature the logits are divided by in :meth:`predict_proba`:
        ``temperature`` when it is a float, else the fitted one.
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
    of every row, a per-row constant that moves no prediction). The counts
    are kept in a dense table while it takes at most 64 MiB, and beyond
    (e.g. more than 16 classes with 256 x 4096 keys) in a sparse store of
    the (key, class) pairs seen, switching as classes arrive; both give the
    same counts and predictions, and ``values_`` and ``class_counts_`` are
    dense either way (the user guide's "Counting or SGD values"). The
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

    *Probabilities.* Logits are a mean over C codebooks, which flattens them:
    at T = 1 probabilities are far too low. ``temperature="auto"`` fits one T
    by minimising the log-loss of training points held out from their own
    values. With counting values that is exact leave-one-out: a point's
    weight is taken from the counts of the keys it fetched, and its logits
    are those of the model that never learned it. A point is an input row
    with its label; copies and integer weights add up, the whole point is
    left out, and its loss counts with its weight (times its class weight).
    With ``mask_unused_keys`` a key that only the point fetched would be
    masked without it and its head snap to another key, which the stored
    codes cannot tell: that codebook is left out of the point's mean (without
    masking the key gives its never-trained values, exactly). SGD steps
    cannot be taken out: a point reads the trained values, less the keys that
    only it trained, an approximation. The points are those whose hash of
    (codes, label) falls below a threshold, halved whenever more than 2048
    are kept: which points, and so T, do not depend on the order or the split
    of the stream (given fitted keys, as for the counts). Only their codes,
    labels, weights and multiplicities are stored. T is fitted when
    probabilities are first asked for, and again once the values, the key
    usage or the parameters read at prediction have changed. A classifier
    pickled before this existed uses T = 1. The user guide's "Calibrated
    probabilities" compares the expected calibration error with peers'.

    *Sample and class weights.* With counting values a sample's weight is
    added to the counts of the keys it fetches: a weight of 2 gives exactly
    (bit for bit) the counts, values and predictions of the sample given
    twice, and a weight of 0 those of the sample left out, in :meth:`fit` and
    in a stream of any order and split. With SGD values the loss of a
    minibatch is the mean over its samples of weight times cross-entropy:
    weights scale the steps, which repeated samples, changing the minibatches,
    would not do exactly. ``key_usage_`` counts each sample of positive weight
    once. The codebook is fitted without labels -- and re-seeded, see
    ``reseed_unused_keys`` -- on the samples of positive weight, unweighted: a
    weight of 0 drops a sample there too, but keys place the inputs, whatever
    each counts for (EMA key fitting depends on order and batches anyway), so
    the exact equivalences need a codebook given fitted (e.g. in
    ``FrozenEstimator``). ``class_weight`` multiplies sample weights by class.
    Counting values apply it when counts are read: each class's counts are
    scaled by its weight, so weighting a class by 2 is weighting each of its
    samples by 2 (bit for bit where float32 products are exact, e.g. powers of
    two), ``"balanced"`` uses the class totals of the whole stream so far, and
    counting stays independent of the order of the stream. SGD values weigh
    each sample's loss by its class weight when it is learned: ``"balanced"``
    then uses the totals up to and including the current batch, so it depends
    on the history of the stream (in :meth:`fit`, the totals of all of y, as
    scikit-learn's ``"balanced"``).

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

    *Threads.* On the CPU, each call sets torch's intra-op threads to
    ``n_jobs``'s count and puts the caller's setting back when it returns or
    raises. The nearest-key searches split their codebooks over that many
    single-threaded workers (one synchronisation per search); the value steps
    and the EMA statistics, long sequences of small operations, run on one
    thread, where torch's per-operation barriers would stall whenever another
    process holds a core. Inside a joblib worker (``GridSearchCV(n_jobs=k)``)
    torch starts with ``cpu_count // k`` threads, which ``None`` keeps.

    *Persistence.* Pickles (and joblib dumps) hold every tensor on the CPU and
    name the device it came from: loaded where that GPU is missing, the
    classifier runs on the CPU, with a warning. They carry a state-format tag;
    loading one written in a format this version cannot read raises
    ``ValueError``.

    *Parametric decoder.* With ``decoder="linear"`` the logits are ``mean over
    c of (v_c @ W_c) + b``: a d x d matrix ``W_c`` per codebook and a bias
    over the d value columns (the classes, plus "not yet seen" with a growing
    label set), starting at the identity and zero -- the mean. Each SGD step
    trains the values (at ``learning_rate``) and the decoder (at
    ``decoder_learning_rate``) together. Unlike the values, the decoder is
    moved by every sample: a phase of new classes retunes it for all inputs
    and nothing pulls it back towards the classes that are gone, which is why
    the paper found that a learned decoder forgets where the mean does not.
    A growing label set grows its inputs and outputs with the table's
    columns: a new class copies those of "not yet seen" (entries between two
    columns copied from it start at zero). ``values_`` are the values before
    the decoder. :meth:`unlearn` is not available (SGD values), and
    ``decoder`` cannot change between :meth:`partial_fit` calls. The user
    guide's "A learned decoder instead of the mean" measures the trade
    (``benchmarks/decoder.py``).

    *Hyperparameters* are checked when :meth:`fit` or :meth:`partial_fit` is
    called (``count_smoothing``, ``class_weight`` and ``n_jobs`` also at
    prediction); an invalid one raises
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
        "temperature": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "n_jobs": N_JOBS_CONSTRAINT,
        "decoder": [StrOptions({"mean", *DECODER_MODELS})],
        "decoder_learning_rate": [
            StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")
        ],
    }

    def __init__(
        self,
        codebook: BaseEstimator | None = None,
        learning_rate: float | Literal["auto"] = "auto",
        max_iter: int = 30,
        batch_size: int = 256,
        label_smoothing: float = 0.1,
        partial_fit_max_iter: int = 1,
        mask_unused_keys: bool = True,
        device: Device = "auto",
        random_state: RandomStateLike = None,
        verbose: int = 0,
        value_update: Literal["count", "sgd", "count-residual"] = "count",
        count_smoothing: float = 0.1,
        reseed_unused_keys: bool = True,
        temperature: float | Literal["auto"] = "auto",
        class_weight: dict[Any, float] | Literal["balanced"] | None = None,
        n_jobs: int | None = None,
        decoder: Literal["mean", "linear"] = "mean",
        decoder_learning_rate: float | Literal["auto"] = "auto",
    ) -> None:
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
        self.temperature = temperature
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.decoder = decoder
        self.decoder_learning_rate = decoder_learning_rate

    # ------------------------------------------------------------------ fit

    @fit_context(prefer_skip_nested_validation=False)
    @all_or_nothing
    @uses_n_jobs
    def fit(
        self, X: MatrixLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> KeyValueBottleneckClassifier:
        """Fit the codebook on X without labels, then train values from zero
        (``max_iter`` epochs of SGD, or one pass of counting).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights, finite and >= 0, not all zero; ``None`` means
            weight one. The codebook is fitted on the samples of positive
            weight, unweighted (see Notes, *Sample weights*).

        Returns
        -------
        self : KeyValueBottleneckClassifier
            The fitted classifier.
        """
        X, y = self._validate(X, y, reset=True)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X)
            if not sample_weight.any():
                raise ValueError(
                    "sample_weight is zero for every sample: fit has no sample to learn from."
                )
        self._value_model_class()  # decoder and value_update go together, before any work
        random_state = check_random_state(self.random_state)
        codebook, owns_keys = self._fitted_codebook(
            positive_weight_rows(X, sample_weight), random_state, keep_fitted=False
        )
        self._random_state = random_state
        self._start(codebook, np.unique(y), fixed=True, owns_keys=owns_keys)
        self._learn(X, y, sample_weight, self.max_iter)
        return self

    @fit_context(prefer_skip_nested_validation=False)
    @all_or_nothing
    @uses_n_jobs
    def partial_fit(
        self,
        X: MatrixLike,
        y: ArrayLike,
        classes: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> KeyValueBottleneckClassifier:
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
            Per-sample weights, finite and >= 0; ``None`` means weight one. A
            batch of zero weight changes no values (see Notes, *Sample and
            class weights*).

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
            self._value_model_class()  # decoder and value_update go together
            random_state = check_random_state(self.random_state)
            key_rows = positive_weight_rows(X, sample_weight, self.codebook)
            codebook, owns_keys = self._fitted_codebook(key_rows, random_state, keep_fitted=True)
            self._random_state = random_state
            self._start(codebook, known, fixed, owns_keys, classes_given=fixed)
            trained_before = False
        else:
            self._check_same_value_update()
            self.classes_, source = extend_label_set(self.classes_, self._fixed_classes, y, classes)
            trained_before = source is None
            if source is not None:  # a new model: the snapshot keeps the old one whole
                self._value_model = self._value_model.add_classes(source)
                self.class_count_ = grown_totals(self.class_count_, source)
            if self.reseed_unused_keys and self._owns_keys and sample_weight.any():
                self.codebook_ = self._codebook_reseeded_on(positive_weight_rows(X, sample_weight))
        self._learn(X, y, sample_weight, self.partial_fit_max_iter, trained_before)
        return self

    @all_or_nothing
    @uses_n_jobs
    def unlearn(
        self, X: MatrixLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> KeyValueBottleneckClassifier:
        """Take samples out of a model with counting values, exactly.

        With ``value_update="count"`` a trained model is a sum of per-sample
        contributions -- class counts, key usage, class totals -- so taking
        samples out leaves the model that never learned them: after
        ``fit(A + B)`` (or any stream of ``partial_fit`` calls over it),
        ``unlearn(B)`` predicts exactly as ``fit(A)`` does, provided the keys
        did not come from the data (see Notes). Pass each sample with the label
        and the weight it was learned with.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The samples to take out.
        y : array-like of shape (n_samples,)
            Their labels, all in ``classes_``.
        sample_weight : array-like of shape (n_samples,), default=None
            The weights they were learned with; ``None`` means weight one.

        Returns
        -------
        self : KeyValueBottleneckClassifier
            The classifier without the samples.

        Raises
        ------
        ValueError
            When the values were trained by SGD (``value_update="sgd"``), for
            labels not in ``classes_``, when the samples cannot all have been
            learned (a count would fall below zero), and when they are all the
            classifier learned and no ``classes`` were given. The classifier is
            then left exactly as it was.

        Notes
        -----
        *Exactness.* Codes are computed with the current keys, so the samples
        are found where they were counted. With keys that do not depend on the
        data -- a fitted codebook given in ``FrozenEstimator`` or fitted before
        the first ``partial_fit`` -- the result equals the model trained
        without the samples bit for bit: counts, ``key_usage_``,
        ``class_count_``, ``classes_`` and predictions. With keys the
        classifier fitted itself (``fit`` with an unfitted codebook, or
        ``reseed_unused_keys``), the samples' values and counts go, but the
        keys they helped place stay where they are, and a sample that a
        re-seeded key has since drawn away is not found where it was counted.

        *Weights.* Counts are float32. Integer weights (``None`` included)
        are exact while every count stays below 2**24 (16,777,216), and any
        count taken below zero is detected. Non-integer weights were
        summed with rounding: the result equals the model without the samples
        up to float32 rounding; a count that ends at most ``1e-3`` times the
        weight taken from it below zero is set to zero, and keys no remaining
        sample fetches are reset to exactly zero.

        *Samples never learned* are detected where the counts show it: taking
        them out would leave a key, or a class, with a negative count (or a
        negative ``key_usage_``). The calibration sample of
        ``temperature="auto"`` catches more: it holds every learned point while
        they number at most 2048 (a hash-chosen subsample beyond), and a point
        it should hold but does not raises too. A sample given with another
        label or weight than it was learned with is detected the same ways;
        where neither shows it, the model is left wrong, not exact.

        *Temperature.* Unlearning takes the samples out of the calibration
        sample too, so ``temperature="auto"`` is fitted again as for the model
        that never learned them. A subsample that was thinned (more than 2048
        points learned) is not filled again: the temperature, and with it
        ``predict_proba``, then equals that of ``fit(A)`` only if ``fit(A)``
        thins it as far; ``predict`` is exact either way.

        *Classes.* A class none of whose samples remain is dropped from
        ``classes_``, as from a model that never saw it -- unless the label
        set was fixed with ``partial_fit(classes=...)``, where it stays with
        zero counts. Samples of zero weight count here: a class is kept while
        any of its samples, of any weight, remains.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.frozen import FrozenEstimator
        >>> from skkvb import KeyCodebook, KeyValueBottleneckClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> keys = KeyCodebook(n_codebooks=16, n_keys=32, key_dim=2, random_state=0).fit(X)
        >>> clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys)).fit(X, y)
        >>> clf.unlearn(X[y == 2], y[y == 2]).classes_
        array([0, 1])
        >>> never = KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys))
        >>> never.fit(X[y < 2], y[y < 2])  # doctest: +ELLIPSIS
        KeyValueBottleneckClassifier(...)
        >>> np.array_equal(clf.predict_proba(X), never.predict_proba(X))
        True
        """
        check_is_fitted(self)
        if self._value_model.name != "count":
            raise ValueError(
                "unlearn needs counting values (value_update='count'), but this "
                "classifier's values were trained with value_update="
                f"{self._value_model.name!r}. "
                + (
                    "Each SGD step depends on the values all earlier samples left, so no "
                    "sample's part can be taken out. "
                    if self._value_model.name == "sgd"
                    else "Its float64 residual sums cannot be restored exactly (removal "
                    "is not implemented for this rule). "
                )
                + "Fit again without the samples, or train with value_update='count'."
            )
        X, y = self._validate(X, y, reset=False)
        sample_weight = check_sample_weight(sample_weight, X)
        class_index = label_positions(self.classes_, y)
        codes = self._codes(X)
        model, usage, distance_sums = self._without(X, codes, class_index, sample_weight)
        calibration = self._calibration_without(X, y, codes, sample_weight)
        class_count = self.class_count_ - class_totals(
            class_index, sample_weight, len(self.classes_)
        )
        class_count = np.where(model.samples > 0, np.maximum(class_count, 0.0), 0.0)
        kept = model.samples > 0
        classes = self.classes_
        if not (self._classes_given or kept.all()):
            if not kept.any():
                raise ValueError(
                    "unlearn would take out every sample this classifier learned, and "
                    "with them every class; fit a new classifier instead."
                )
            model = model.add_classes(np.flatnonzero(kept))  # here: the classes left
            classes, class_count = classes[kept], class_count[kept]
        self.classes_, self._value_model, self.class_count_ = classes, model, class_count
        self.key_usage_ = usage
        self._distance_sums, self._calibration = distance_sums, calibration
        self._weight_seen = max(0.0, self._weight_seen - np.sum(sample_weight, dtype=float))
        return self

    def _calibration_without(self, X, y, codes, sample_weight):
        """The calibration sample of ``temperature="auto"`` without these samples
        (counting values apply class weights when read: the weights are as learned)."""
        try:
            return self._calibration.remove(X, y, codes, sample_weight=sample_weight)
        except ValueError as error:
            raise ValueError(
                "unlearn: these samples cannot all have been learned with these labels "
                "and weights -- some are missing from the calibration sample of "
                "temperature='auto'. Pass the samples as they were learned; the "
                "classifier is unchanged."
            ) from error

    def _without(self, X, codes, class_index, sample_weight):
        """The value model, key usage and distance sums without these samples of
        these codes; ValueError, with nothing changed, when a count would fall
        below zero."""
        model = self._value_model
        weights = torch.as_tensor(sample_weight, device=model.device)
        usage = self.key_usage_ - count_usage(codes[weights > 0], model.n_keys).cpu().numpy()
        distance_sums = self._distance_sums - self._distance_sums_of(X, codes, weights)
        # Rounding of the float64 sums aside, they are zero once no sample is left.
        distance_sums = np.maximum(distance_sums, 0.0) * bool(usage.any())
        integral = bool(np.all(sample_weight == np.floor(sample_weight)))
        model, overdrawn = model.without(
            flat_codes(codes, model.n_keys),
            torch.as_tensor(class_index, device=model.device),
            weights,
            rtol=0.0 if integral else UNLEARN_RTOL,
            empty_rows=torch.as_tensor(usage.reshape(-1) == 0, device=model.device),
        )
        overdrawn += int((usage < 0).sum())
        if overdrawn:
            raise ValueError(
                "unlearn: these samples cannot all have been learned with these labels "
                f"and weights -- taking them out would leave {overdrawn} counts below "
                "zero. Pass the samples as they were learned; the classifier is unchanged."
            )
        return model, usage, distance_sums

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
        if self.decoder != self._value_model.decoder:
            raise ValueError(
                f"decoder={self.decoder!r}, but this classifier was trained with "
                f"decoder={self._value_model.decoder!r}; partial_fit cannot switch. Call "
                "fit to start again."
            )

    def _value_model_class(self):
        """The value model that ``value_update`` and ``decoder`` name."""
        if self.decoder == "mean":
            return VALUE_MODELS[self.value_update]
        if self.value_update != "sgd":
            raise ValueError(
                f"decoder={self.decoder!r} is trained by SGD together with the values and "
                f"needs value_update='sgd', got value_update={self.value_update!r}. "
                "Counting values are decoded by their mean (decoder='mean')."
            )
        return DECODER_MODELS[self.decoder]

    # ------------------------------------------------------------ training

    def _start(self, codebook, classes, fixed, owns_keys, classes_given=False):
        """Fresh fitted state: the value model of ``value_update``, zero usage."""
        self.codebook_ = codebook
        self.classes_ = np.asarray(classes)
        self._fixed_classes = fixed
        self._classes_given = classes_given  # by partial_fit(classes=...): unlearn keeps them
        self._owns_keys = owns_keys
        n_codebooks, n_keys, _ = codebook.keys_.shape
        model_class = self._value_model_class()
        self._value_model = model_class(
            n_codebooks, n_keys, len(classes), growing=not fixed,
            device=resolve_device(self.device),
        )
        self.key_usage_ = np.zeros((n_codebooks, n_keys), dtype=np.int64)
        self._distance_sums = np.zeros(n_codebooks)  # for score_samples
        self.class_count_ = np.zeros(len(classes))
        self._weight_seen = 0.0
        self._calibration = CalibrationSample(n_codebooks, n_keys)  # for temperature="auto"

    def _rule_parameters(self):
        """The parameters the value rule reads, by name, from this estimator."""
        return {name: getattr(self, name) for name in self._value_model.hyperparameters}

    def _learn(self, X, y, sample_weight, max_iter, trained_before=False):
        """X -> codes (once) -> the value model's update; then key usage.

        ``trained_before``: the model existed before this call, so the rows the
        batch fetches are put back if training raises (a new model is simply
        dropped with the rest of the call's state, unless it shares storage
        with the old one).
        """
        batch_weight = len(y) if sample_weight is None else np.sum(sample_weight, dtype=float)
        self._check_weight_budget(batch_weight)
        model = self._value_model
        device = model.device
        codes = self._codes(X)
        rows = flat_codes(codes, model.n_keys)
        class_index = np.searchsorted(self.classes_, y)
        # Class weights count this batch in (see class_weight); the rule applies them.
        class_count = self.class_count_ + class_totals(
            class_index, sample_weight, len(self.classes_)
        )
        class_weights = self._class_weights(class_count)
        labels = torch.as_tensor(class_index, device=device)
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(sample_weight, dtype=torch.float32, device=device)
        guarded = trained_before or model.shares_storage
        guard = model.restored_on_error(rows) if guarded else nullcontext()
        bar = progress_bar(model.n_passes(max_iter), "values", "epoch", self.verbose)
        with single_threaded(), guard, bar:
            self.n_iter_ = model.update(
                rows, labels, weights, max_iter=max_iter, random_state=self._random_state,
                on_pass=self._pass_reporter(bar) if self.verbose else None,
                class_weights=class_weights, **self._rule_parameters(),
                **self._rule_inputs(X, codes),
            )
            used = codes if weights is None else codes[weights > 0]
            self.key_usage_ = self.key_usage_ + count_usage(used, model.n_keys).cpu().numpy()
            self._distance_sums = self._distance_sums + self._distance_sums_of(X, codes, weights)
            self._calibration = self._calibration.add(
                X, y, codes, self._learned_weights(sample_weight, class_index, class_weights)
            )
        self.class_count_ = class_count
        self._weight_seen += float(batch_weight)

    def _rule_inputs(self, X, codes):
        """What the value rule reads of the samples besides their codes: the
        residuals (heads less fetched keys) for the rules that keep them."""
        if not getattr(self._value_model, "reads_residuals", False):
            return {}
        projection, keys = self.codebook_.engine_tensors(codes.device)
        return {"residuals": residuals_of_array(X, projection, keys, codes)}

    def _distance_sums_of(self, X, codes, weights):
        """Per codebook, the summed squared distance from the heads of X's samples
        of positive weight to the keys they fetched (``score_samples`` reads it)."""
        projection, keys = self.codebook_.engine_tensors(codes.device)
        distances = head_distances_of_array(X, projection, keys, codes)
        if weights is not None:
            distances = distances[weights > 0]
        return distances.double().sum(0).cpu().numpy()

    def _learned_weights(self, sample_weight, class_index, class_weights):
        """Each sample's weight as the rule learned it, for the calibration sample:
        times its class weight where the rule applies class weights in the loss."""
        if class_weights is None or self._value_model.reads_class_weights:
            return sample_weight
        by_class = class_weights.cpu().numpy().astype(np.float64)[class_index]
        return by_class if sample_weight is None else sample_weight * by_class

    def _class_weights(self, class_count):
        """``class_weight`` over ``classes_`` for these class totals, as a tensor
        on the model's device (None for ``class_weight=None``)."""
        weights = class_weights(self.class_weight, self.classes_, class_count, self._fixed_classes)
        if weights is None:
            return None
        weighted = float(weights @ class_count)
        if weighted > WEIGHT_BUDGET:  # a count, or an SGD step, would overflow float32
            raise ValueError(
                f"class_weight times the sample weight of each class adds up to "
                f"{weighted:.3g}, beyond the {WEIGHT_BUDGET:.3g} that the float32 value "
                "table holds; rescale class_weight."
            )
        return torch.as_tensor(weights, dtype=torch.float32, device=self._value_model.device)

    @staticmethod
    def _pass_reporter(bar):
        """Advance the bar after each pass; print the loss where the rule has one."""

        def on_pass(seconds, loss):
            if loss is not None:
                write(f"-- Epoch {bar.n + 1}: loss {loss:.4f}, {seconds:.4f} s")
            bar.update()

        return on_pass

    # ---------------------------------------------------------- prediction

    def _prediction_parameters(self):
        """The rule's parameters, checked again: some are read at prediction and
        may have been set since fit."""
        parameters = self._rule_parameters()
        checked = {**parameters, "class_weight": self.class_weight}
        validate_parameter_constraints(
            {name: self._parameter_constraints[name] for name in checked},
            checked,
            caller_name=type(self).__name__,
        )
        return {**parameters, "class_weights": self._class_weights(self.class_count_)}

    @uses_n_jobs
    def _logits(self, X):
        """Logits of the classes of ``classes_``, numpy (N, n_classes)."""
        check_is_fitted(self)
        X = validate_features(self, X, reset=False)
        parameters = self._prediction_parameters()
        encode_chunk = self._chunk_encoder(self._key_mask())
        out = np.empty((X.shape[0], len(self.classes_)), dtype=np.float32)
        # Each row's logits are its own: the chunk size changes no result.
        per_row = 4 * self._value_model.n_codebooks * max(len(self.classes_), 1)
        chunk = min(PREDICT_CHUNK_ROWS, max(PREDICT_MIN_ROWS, PREDICT_BLOCK_BYTES // per_row))
        for start in range(0, X.shape[0], chunk):
            codes = encode_chunk(X[start : start + chunk])
            rows = flat_codes(codes, self._value_model.n_keys)
            with single_threaded():  # small gathers: one thread (see engine.threads)
                inputs = self._rule_inputs(X[start : start + chunk], codes)
                logits = self._value_model.logits(rows, **inputs, **parameters)
            out[start : start + chunk] = logits.cpu().numpy()
        return out

    def decision_function(self, X: MatrixLike) -> np.ndarray:
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

    def predict(self, X: MatrixLike) -> np.ndarray:
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

    def predict_proba(self, X: MatrixLike) -> np.ndarray:
        """Class probabilities: the softmax of the logits over ``classes_``,
        divided by ``temperature_``.

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

    def predict_log_proba(self, X: MatrixLike) -> np.ndarray:
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
        logits = self._logits(X).astype(np.float64) / self.temperature_
        logits -= logits.max(1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(1, keepdims=True))

    @uses_n_jobs
    def score_samples(self, X: MatrixLike) -> np.ndarray:
        """How typical each sample is of the training samples: a novelty score.

        Higher means more typical, as in scikit-learn's ``score_samples``. A
        sample scores low when it fetches keys that few or no training
        samples fetched, or lies far from the keys it fetches. Per codebook,
        the log-probability of the fetched key's cell under the training
        samples, with the additive smoothing ``a = count_smoothing``, minus
        the squared distance from the head to that key relative to the
        training samples' mean distance; averaged over codebooks::

            mean over c of  log((n_c + a) / (n + a * K))  -  d_c / mean_c

        with ``n_c`` the training samples that fetched the sample's key
        (``key_usage_``, nearest key among all keys, used or not), ``n`` the
        training samples (of positive weight), ``K`` the keys per codebook.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64
            The novelty score of each sample; lower is more novel.

        See Also
        --------
        KeyCodebook.score_samples : Distances to the nearest keys alone.

        Notes
        -----
        The two terms are the log-likelihood of the cell a sample falls in
        and, up to a constant, of its distance to the key under an
        exponential model with the training mean. Which one carries the
        signal depends on the keys: fitted on a broad unlabelled set, they
        tile unfamiliar inputs as finely as familiar ones, and the cell
        counts tell them apart; fitted on the training samples themselves
        (``fit`` with an unfitted codebook), every key is used and the
        distance does. The "Novelty" section of the user guide measures both
        against the usual baselines. Scores depend only on ``key_usage_`` and
        on running sums of the training distances, so they are the same for
        a stream in any order (up to float64 rounding of those sums), and
        :meth:`unlearn` takes a sample's part out of them. With no training
        sample of positive weight, only the cell term is left: a constant.

        Examples
        --------
        >>> import numpy as np
        >>> from skkvb import KeyCodebook, KeyValueBottleneckClassifier
        >>> rng = np.random.RandomState(0)
        >>> X, y = rng.normal(size=(300, 8)), rng.randint(3, size=300)
        >>> codebook = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)
        >>> clf = KeyValueBottleneckClassifier(codebook=codebook).fit(X, y)
        >>> typical, shifted = rng.normal(size=(50, 8)), rng.normal(4, 1, size=(50, 8))
        >>> bool(np.median(clf.score_samples(typical)) > clf.score_samples(shifted).max())
        True
        """
        check_is_fitted(self)
        X = validate_features(self, X, reset=False)
        validate_parameter_constraints(
            {"count_smoothing": self._parameter_constraints["count_smoothing"]},
            {"count_smoothing": self.count_smoothing},
            caller_name=type(self).__name__,
        )
        codes = self._codes(X)
        projection, keys = self.codebook_.engine_tensors(codes.device)
        scores = typicality(
            torch.as_tensor(self.key_usage_, device=codes.device),
            codes,
            head_distances_of_array(X, projection, keys, codes),
            torch.as_tensor(self._distance_sums, device=codes.device),
            float(self.count_smoothing),
        )
        return scores.cpu().numpy()

    @property
    def temperature_(self):
        check_is_fitted(self)
        validate_parameter_constraints(
            {"temperature": self._parameter_constraints["temperature"]},
            {"temperature": self.temperature},
            caller_name=type(self).__name__,
        )
        if not isinstance(self.temperature, str):  # a number, used as it is
            return float(self.temperature)
        calibration = getattr(self, "_calibration", None)
        if calibration is None:  # pickled before calibration samples existed
            return 1.0
        return calibration.temperature(
            self._value_model, self.classes_, self.key_usage_, self.mask_unused_keys,
            self._prediction_parameters(),
        )

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

    @staticmethod
    def _upgrade_state(state, state_format):
        """Format 2 lacks what calibration, class weights, unlearning and novelty
        scores keep (a calibration sample, class totals, per-class sample tallies,
        distance sums), and none of it follows from the counts: refuse it."""
        raise ValueError(
            f"This KeyValueBottleneckClassifier was pickled in state format {state_format}, "
            "which lacks the state this version keeps for calibrated probabilities, class "
            "weights, unlearning and novelty scores. Fit it again, or load it with the skkvb "
            "version that wrote it."
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_class = True
        return tags
