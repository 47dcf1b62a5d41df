"""KeyCodebook: the projection and the frozen keys as a scikit-learn transformer."""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._compat import Interval, StrOptions, fit_context
from ._dask import is_dask_array, transform_row_blocks
from ._device import DeviceMixin, resolve_device
from ._doc_link import DocLinkMixin
from ._encoding import encode_array, head_distances_of_array
from ._persistence import all_or_nothing
from ._progress import progress_bar
from ._threads import N_JOBS_CONSTRAINT, uses_n_jobs
from ._typing import Device, MatrixLike, RandomStateLike
from ._validation import Count, first_partial_fit, validate_features
from .engine.heads import PROJECTIONS, head_shape, make_projection, project
from .engine.keys import ema_update, init_ema_state, resume_ema_state
from .engine.seeding import draw_seed, torch_generator
from .engine.whitening import whitening_matrix

__all__ = ["AUTO_MAX_KEYS", "KeyCodebook", "auto_n_keys"]

# The most keys n_keys="auto" gives a codebook (the paper's K).
AUTO_MAX_KEYS = 4096


def auto_n_keys(n_samples, stream):
    """Keys per codebook of ``n_keys="auto"``: for :meth:`KeyCodebook.fit` on
    ``n_samples`` samples, one per sample, at most ``AUTO_MAX_KEYS``; for the
    first batch of a ``stream`` (``partial_fit``), ``AUTO_MAX_KEYS``.

    A k-means codebook cannot place more distinct keys than it has samples:
    the others start as duplicates that never win a head, die and are revived
    on the same samples, costing memory and search time for no new code. A
    stream's first batch does not bound the data to come, whose later classes
    need keys of their own (re-seeded there by the classifier): capped at the
    first of five class-incremental phases of digits (64 x 256 keys), the
    classifier ended at 0.932 accuracy instead of 0.989 (``benchmarks/cold_start.py
    --shape 64x256x32``, in ``benchmarks/results/``).
    """
    return AUTO_MAX_KEYS if stream else min(AUTO_MAX_KEYS, n_samples)


# whiten builds a float64 (n_features, n_features) covariance: 512 MiB here.
MAX_WHITEN_FEATURES = 8192
# Fewer rows than this per whitened component warn (see _warn_if_too_few_to_whiten).
WHITEN_ROWS_PER_COMPONENT = 2


def _dense_rows(rows):
    return rows.toarray() if sp.issparse(rows) else rows


class KeyCodebook(
    DocLinkMixin, DeviceMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Frozen-key codebooks of a Discrete Key-Value Bottleneck, fitted without labels.

    Each input is projected into ``n_codebooks`` heads of dimension ``key_dim``
    by a fixed random matrix; each head has its own codebook of ``n_keys`` keys,
    fitted by exponential-moving-average online k-means (as in VQ-VAE). The
    transform returns, for every sample and codebook, the index of the nearest
    key: the *codes* that a :class:`KeyValueBottleneckClassifier` reads its
    values with. Fit it on unlabelled data, then keep it frozen.

    Parameters
    ----------
    n_codebooks : int, default=64
        Number of heads C, each with its own codebook.
    n_keys : int or "auto", default="auto"
        Number of keys K per codebook. ``"auto"``: in :meth:`fit`, one per
        sample, at most 4096 (the paper's K): ``min(4096, n_samples)``, since
        more keys than samples cannot all be distinct; in the first
        :meth:`partial_fit`, 4096, since a stream's first batch does not bound
        the data to come. ``n_keys_`` is the number used.
    key_dim : int, default=32
        Dimension d_k of each head and key (``projection="gaussian"`` or
        ``"orthogonal"`` only).
        The "Accuracy" page of the documentation compares shapes; the paper's
        is ``n_codebooks=256, n_keys=4096, key_dim=14``.
    projection : {"gaussian", "orthogonal", "partition", "none"}, default="gaussian"
        ``"gaussian"``: a fixed Gaussian random projection with unit-norm
        columns, drawn with numpy from ``random_state``. ``"orthogonal"``: the
        same columns orthonormalised in blocks of ``n_features`` (orthogonal
        random features), so that the heads together keep the input's
        distances instead of stretching some directions; use it with
        ``whiten``. ``"partition"``: split
        the features into ``n_codebooks`` contiguous chunks (for
        low-dimensional inputs; ``key_dim`` is then ``ceil(n_features /
        n_codebooks)``, shorter chunks zero-padded). ``"none"``: one codebook
        on the raw input (``n_codebooks`` and ``key_dim`` are ignored).
    whiten : int or None, default=None
        ``None``: project the inputs as they are. ``m``: first map them onto
        the ``m`` leading principal components of the data the keys are
        fitted on (:meth:`fit`'s X, or the *first* batch of
        :meth:`partial_fit`), each divided by ``sqrt(variance + 0.1 * mean
        variance)``, so that distances weigh all of those directions alike
        (whitening; the shrinkage keeps near-constant directions from being
        blown up). The map is fitted without labels, once, and multiplied into
        ``projection_``, so encoding costs the same; like the keys, it weighs
        every row alike (a classifier's ``sample_weight`` does not enter it), and
        inputs may have at most 8192 features. Fit it on many more samples
        than ``m`` (fewer than ``2 * m`` warn): streaming MNIST embeddings
        from a first batch of 100, ``whiten=256`` scored 0.876 against 0.901
        unwhitened; from 2,000, 0.908 against 0.892
        (``benchmarks/whiten_first_batch.py``). Opt-in, for embeddings of
        a pre-trained encoder: with ``m=256`` and ``projection="orthogonal"``
        counting values gained 4 to 6 points on EfficientNet-Lite0 embeddings
        of MNIST and were within 0.6 points on Fashion-MNIST, but lost 1 to 2
        points on raw digits pixels ("Accuracy" page, round 3).
    decay : float, default=0.95
        EMA decay of the key statistics, in [0, 1).
    max_iter : int, default=10
        Passes (epochs) over the data in :meth:`fit`. :meth:`partial_fit` makes one.
    batch_size : int, default=256
        Samples per EMA step.
    dead_key_threshold : float, default=0.1
        A key whose EMA count falls below ``dead_key_threshold * batch / K``
        (this fraction of uniform usage) is re-seeded at a random head of the
        current batch, and its EMA statistics are reset with it.
    device : str or torch.device, default="auto"
        Where fitting and encoding run; ``"auto"`` picks CUDA when available. A
        GPU that is not available falls back to the CPU with a warning.
    random_state : int, RandomState instance or None, default=None
        Seeds the projection, the initial keys, the batch order and revivals.
    verbose : int, default=0
        When > 0, a progress bar over the EMA epochs on stderr (tqdm).
    n_jobs : int or None, default=None
        CPU threads torch uses during :meth:`fit`, :meth:`partial_fit` and
        :meth:`transform` (the nearest-key searches share them; the EMA
        statistics run on one). ``None`` means 1 -- several threads slow down
        badly on a busy machine -- unless in a ``joblib.parallel_config(n_jobs=k)``
        context (``k``) or called by a classifier (its ``n_jobs``), and never
        more than an outer limit sets (``OMP_NUM_THREADS``, e.g. in a joblib
        worker; ``threadpoolctl.threadpool_limits``). ``-1`` means all cores,
        ``k > 0`` ``k`` threads. torch's own setting is put back after each call.

    Attributes
    ----------
    keys_ : ndarray of shape (`n_codebooks_`, `n_keys_`, `key_dim_`), float32
        The fitted keys.
    projection_ : ndarray of shape (`n_features_in_`, `n_codebooks_` * `key_dim_`), float32
        The fixed projection from inputs to heads (with ``whiten``, the
        whitening map times the random projection).
    key_counts_ : ndarray of shape (`n_codebooks_`, `n_keys_`), float32
        EMA count of heads assigned to each key at the last step.
    n_codebooks_ : int
        Number of codebooks actually used (1 with ``projection="none"``).
    n_keys_ : int
        Number of keys per codebook actually used (see ``n_keys``).
    key_dim_ : int
        Dimension of heads and keys actually used.
    n_steps_ : int
        EMA steps taken so far.
    n_iter_ : int
        Epochs run by the last :meth:`fit` (1 after each :meth:`partial_fit`).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when X has string feature names.

    See Also
    --------
    KeyValueBottleneckClassifier : Learns class values on top of these codes.

    Notes
    -----
    EMA counts start at one, not zero, so keys that the first batch misses stay
    at their initial head instead of exploding. Dead keys are re-seeded with
    their counts and sums reset; otherwise the next step would undo the revival.
    Between calls the EMA state is the keys and their counts: each key is its
    EMA sum over its smoothed count, so a later :meth:`partial_fit` takes the
    sums from them (to float32 rounding and the Laplace smoothing) and pickles
    do not carry them.

    X may be a dense array of any float or integer dtype (computed in float32)
    or a scipy sparse matrix (densified a few thousand rows at a time).

    A call of :meth:`fit` or :meth:`partial_fit` that raises -- invalid input,
    a ``KeyboardInterrupt`` -- leaves the codebook exactly as it was before the
    call. Pickles carry a state-format tag; loading one written in a format
    this version cannot read raises ``ValueError``.

    Invalid hyperparameters raise
    :class:`~sklearn.utils._param_validation.InvalidParameterError` (a
    ``ValueError``) naming the parameter, when :meth:`fit` or
    :meth:`partial_fit` is called.

    References
    ----------
    .. [1] F. Träuble et al., "Discrete Key-Value Bottleneck", ICML 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from skkvb import KeyCodebook
    >>> X = np.random.RandomState(0).normal(size=(100, 8))
    >>> codebook = KeyCodebook(n_codebooks=4, n_keys=16, key_dim=3, random_state=0)
    >>> codes = codebook.fit_transform(X)
    >>> codes.shape, codes.dtype
    ((100, 4), dtype('int64'))
    >>> codebook.keys_.shape
    (4, 16, 3)

    Whitening the key data's 5 leading principal components first, with
    orthogonal heads (for embeddings of a pre-trained encoder):

    >>> whitened = KeyCodebook(n_codebooks=4, n_keys=16, key_dim=3, whiten=5,
    ...                        projection="orthogonal", random_state=0).fit(X)
    >>> whitened.projection_.shape  # the whitening is folded into the projection
    (8, 12)
    """

    _parameter_constraints: dict = {
        "n_codebooks": [Count()],
        "n_keys": [Count(), StrOptions({"auto"})],
        "key_dim": [Count()],
        "projection": [StrOptions(set(PROJECTIONS))],
        "whiten": [Count(), None],
        "decay": [Interval(Real, 0, 1, closed="left")],
        "max_iter": [Count()],
        "batch_size": [Count()],
        "dead_key_threshold": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }

    def __init__(
        self,
        n_codebooks: int = 64,
        n_keys: int | Literal["auto"] = "auto",
        key_dim: int = 32,
        projection: Literal["gaussian", "orthogonal", "partition", "none"] = "gaussian",
        whiten: int | None = None,
        decay: float = 0.95,
        max_iter: int = 10,
        batch_size: int = 256,
        dead_key_threshold: float = 0.1,
        device: Device = "auto",
        random_state: RandomStateLike = None,
        verbose: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.n_codebooks = n_codebooks
        self.n_keys = n_keys
        self.key_dim = key_dim
        self.projection = projection
        self.whiten = whiten
        self.decay = decay
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.dead_key_threshold = dead_key_threshold
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.n_jobs = n_jobs

    def __setstate__(self, state):
        super().__setstate__(state)
        if not hasattr(self, "whiten"):  # pickled before whiten existed: it was off
            self.whiten = None

    def _check_input_width(self, X):
        n_features = X.shape[1]
        if self.whiten is not None and n_features > MAX_WHITEN_FEATURES:
            raise ValueError(
                f"whiten={self.whiten} needs the {n_features} x {n_features} covariance of "
                f"the inputs; at most {MAX_WHITEN_FEATURES} features are supported. Reduce "
                "the inputs first (e.g. sklearn.decomposition.PCA) or use whiten=None."
            )
        if self.whiten is not None:
            n_features = min(n_features, self.whiten)
        if self.projection == "partition" and self.n_codebooks > n_features:
            raise ValueError(
                f"Found array with {n_features} feature(s) (shape={X.shape}) while "
                f"projection='partition' with n_codebooks={self.n_codebooks} needs "
                "at least one feature per codebook."
            )

    @fit_context(prefer_skip_nested_validation=True)
    @all_or_nothing
    @uses_n_jobs
    def fit(self, X: MatrixLike, y: None = None) -> KeyCodebook:
        """Fit the keys on X by EMA for ``max_iter`` passes, from scratch.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Unlabelled training data.
        y : None
            Ignored.

        Returns
        -------
        self : KeyCodebook
            The fitted codebook.
        """
        X = validate_features(self, X, reset=True)
        self._check_input_width(X)
        device = resolve_device(self.device)
        self._random_state = check_random_state(self.random_state)
        self._start(X, stream=False)
        state = None
        with progress_bar(self.max_iter, "keys", "epoch", self.verbose) as bar:
            for _ in range(self.max_iter):
                order = self._random_state.permutation(X.shape[0])
                state = self._ema_epoch(X, order, state, device)
                bar.update()
        self._store(state)
        self.n_iter_ = self.max_iter
        return self

    @fit_context(prefer_skip_nested_validation=True)
    @all_or_nothing
    @uses_n_jobs
    def partial_fit(self, X: MatrixLike, y: None = None) -> KeyCodebook:
        """Update the keys with one EMA pass over X, in the given order.

        The first call draws the projection and starts the keys at heads of
        the first batch.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Unlabelled data.
        y : None
            Ignored.

        Returns
        -------
        self : KeyCodebook
            The updated codebook.
        """
        first_call = first_partial_fit(self, "keys_")
        X = validate_features(self, X, reset=first_call)
        self._check_input_width(X)
        device = resolve_device(self.device)
        if first_call:
            self._random_state = check_random_state(self.random_state)
            self._start(X, stream=True)
            state = None
        else:
            state = self._load_state(device)
        with progress_bar(1, "keys", "epoch", self.verbose) as bar:
            state = self._ema_epoch(X, np.arange(X.shape[0]), state, device)
            bar.update()
        self._store(state)
        self.n_iter_ = 1
        return self

    @uses_n_jobs
    def transform(self, X: MatrixLike) -> np.ndarray:
        """Codes of X: the nearest key of each head in each codebook.

        A ``dask.array.Array`` chunked along rows is transformed lazily, one
        task per block of rows (see :ref:`scaling_out`).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        codes : ndarray of shape (n_samples, `n_codebooks_`), int64
            Index of the nearest key, per sample and codebook; a dask array
            with the row chunks of X when X is one.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return transform_row_blocks(self, X, self.n_codebooks_, np.int64)
        X = validate_features(self, X, reset=False)
        projection, keys = self.engine_tensors(resolve_device(self.device))
        return encode_array(X, projection, keys).cpu().numpy()

    @uses_n_jobs
    def score_samples(self, X: MatrixLike) -> np.ndarray:
        """How typical each sample is of the data the keys were fitted on.

        Minus the mean over codebooks of the squared L2 distance from each
        head to its nearest key (its quantisation error): 0 for a sample whose
        heads all sit on keys, lower the farther a sample lies from every key.
        Higher means more typical, as in scikit-learn's ``score_samples``.
        :meth:`KeyValueBottleneckClassifier.score_samples` adds what the keys
        alone cannot tell: whether training ever fetched them.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Input samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64
            Minus the mean squared distance to the nearest keys.

        Notes
        -----
        Distances are in the squared units of the heads, so scores compare
        samples under one codebook, not across codebooks. Keys fitted on a
        broad unlabelled set tile inputs that no training label covers as
        finely as the rest, so this score sees only inputs far from all of
        that set; the "Novelty" section of the user guide measures it.

        Examples
        --------
        >>> import numpy as np
        >>> from skkvb import KeyCodebook
        >>> rng = np.random.RandomState(0)
        >>> codebook = KeyCodebook(n_codebooks=4, n_keys=16, key_dim=3, random_state=0)
        >>> codebook = codebook.fit(rng.normal(size=(200, 8)))
        >>> typical, shifted = rng.normal(size=(50, 8)), rng.normal(5, 1, size=(50, 8))
        >>> bool(codebook.score_samples(typical).mean() > codebook.score_samples(shifted).max())
        True
        """
        check_is_fitted(self)
        X = validate_features(self, X, reset=False)
        projection, keys = self.engine_tensors(resolve_device(self.device))
        codes = encode_array(X, projection, keys)
        distances = head_distances_of_array(X, projection, keys, codes)
        return -distances.double().mean(1).cpu().numpy()

    def engine_tensors(self, device: Device) -> tuple[torch.Tensor, torch.Tensor]:
        """The projection and keys as torch tensors on ``device``.

        Used by estimators built on this codebook; on the CPU no copy is made.
        """
        check_is_fitted(self)
        projection = torch.as_tensor(self.projection_, device=device)
        keys = torch.as_tensor(self.keys_, device=device)
        return projection, keys

    def _start(self, X, stream):
        n_samples, n_features = X.shape
        whitening = None
        if self.whiten is not None:
            whitening = whitening_matrix(X, self.whiten)
            self._warn_if_too_few_to_whiten(n_samples, whitening.shape[1])
        n_inputs = n_features if whitening is None else whitening.shape[1]
        self.n_codebooks_, self.key_dim_ = head_shape(
            self.projection, n_inputs, self.n_codebooks, self.key_dim
        )
        self.n_keys_ = auto_n_keys(n_samples, stream) if self.n_keys == "auto" else self.n_keys
        projection = make_projection(
            self.projection, n_inputs, self.n_codebooks, self.key_dim, self._random_state
        )
        if whitening is not None:
            projection = (whitening @ projection).astype(np.float32)
        self.projection_ = projection
        self.n_steps_ = 0

    def _warn_if_too_few_to_whiten(self, n_samples, n_components):
        # benchmarks/whiten_first_batch.py, MNIST embeddings, whiten=256 fitted on
        # a stream's first batch: 100 rows 0.876 (0.901 unwhitened), 500 rows
        # 0.901 (0.899), 2,000 rows 0.908 (0.892); 3 seeds.
        if n_samples < WHITEN_ROWS_PER_COMPONENT * n_components:
            warnings.warn(
                f"KeyCodebook(whiten={self.whiten}) is fitted on {n_samples} samples; "
                f"{n_components} components need at least "
                f"{WHITEN_ROWS_PER_COMPONENT * n_components} to be estimated, or the "
                "directions the data barely covers are amplified. Fit the codebook on "
                "more unlabelled data first (pass it as FrozenEstimator(codebook)), or "
                "lower whiten.",
                UserWarning,
                stacklevel=2,
            )

    def _ema_epoch(self, X, order, state, device):
        """One EMA pass over ``X[order]`` in batches; returns the EMA state."""
        generator = torch_generator(draw_seed(self._random_state))
        projection = torch.as_tensor(self.projection_, device=device)
        for start in range(0, len(order), self.batch_size):
            batch = torch.as_tensor(_dense_rows(X[order[start : start + self.batch_size]]))
            heads = project(batch.to(device, torch.float32), projection, self.n_codebooks_)
            if state is None:
                state = init_ema_state(heads, self.n_keys_, generator)
            ema_update(state, heads, self.decay, self.dead_key_threshold, generator)
            self.n_steps_ += 1
        return state

    def _store(self, state):
        self.keys_ = state.keys.cpu().numpy()
        self.key_counts_ = state.counts.cpu().numpy()

    def _load_state(self, device):
        keys, counts = torch.as_tensor(self.keys_), torch.as_tensor(self.key_counts_)
        return resume_ema_state(keys.to(device), counts.to(device))

    @staticmethod
    def _upgrade_state(state, state_format):
        """Format-2 state kept the EMA sums and had no ``n_keys_``."""
        if state_format < 3:
            state.pop("_key_sums", None)
            if "keys_" in state:
                state["n_keys_"] = state["keys_"].shape[1]
        return state

    @property
    def _n_features_out(self):
        return self.n_codebooks_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags
