"""KeyCodebook: the projection and the frozen keys as a scikit-learn transformer."""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import FLOAT_DTYPES, check_is_fitted, validate_data

from ._codebook import EMAState, ema_update, encode, init_ema_state, prepare_keys
from ._dask import is_dask_array, transform_row_blocks
from ._device import draw_seed, resolve_device, torch_generator
from ._persistence import all_or_nothing, tag_state, untag_state
from ._projection import PROJECTIONS, head_shape, make_projection, project
from ._validation import check_choice, check_fraction, check_positive_int

__all__ = ["KeyCodebook", "check_float32_range", "encode_array"]

# Rows of a sparse X densified at a time: a multiple of the engine's encoding
# block, so a sparse X gets the codes of its dense twin in bounded memory.
SPARSE_CHUNK_ROWS = 4096
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(X):
    """Reject finite float64 values that the engine's float32 would turn into inf."""
    if X.dtype != np.float64:
        return X
    data = X.data if sp.issparse(X) else X
    if data.size and max(data.max(), -data.min()) > _FLOAT32_MAX:
        raise ValueError(
            "X contains values beyond the float32 range (|x| > 3.4e38); the keys are "
            "computed in float32, where they would be infinite. Rescale X."
        )
    return X


def encode_array(X, projection, keys, key_mask=None, prepared=None):
    """Codes of a validated dense or scipy sparse X: (N, C) int64 tensor.

    A sparse X is densified ``SPARSE_CHUNK_ROWS`` rows at a time; a dense one
    goes to the engine as it is (the engine converts it block by block).
    ``prepared`` is ``prepare_keys(keys, key_mask)`` when the caller has it.
    """
    if prepared is None:
        prepared = prepare_keys(keys, key_mask)
    if not sp.issparse(X):
        with warnings.catch_warnings():
            # Read-only arrays (pandas copy-on-write, memory maps) are only read here.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return encode(X, projection, keys, prepared=prepared)
    codes = torch.empty(X.shape[0], keys.shape[0], dtype=torch.int64, device=keys.device)
    for start in range(0, X.shape[0], SPARSE_CHUNK_ROWS):
        chunk = X[start : start + SPARSE_CHUNK_ROWS].toarray()
        codes[start : start + SPARSE_CHUNK_ROWS] = encode(chunk, projection, keys, prepared=prepared)
    return codes


def _dense_rows(rows):
    return rows.toarray() if sp.issparse(rows) else rows


class KeyCodebook(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
    n_keys : int, default=4096
        Number of keys K per codebook.
    key_dim : int, default=32
        Dimension d_k of each head and key (``projection="gaussian"`` only).
        The default shape, 64 x 4096 keys of dimension 32, was the most
        accurate we measured on frozen-encoder embeddings within the speed
        bars (see the "Accuracy" page of the documentation); the paper's is
        ``n_codebooks=256, n_keys=4096, key_dim=14``.
    projection : {"gaussian", "partition", "none"}, default="gaussian"
        ``"gaussian"``: a fixed Gaussian random projection with unit-norm
        columns, drawn with numpy from ``random_state``. ``"partition"``: split
        the features into ``n_codebooks`` contiguous chunks (for
        low-dimensional inputs; ``key_dim`` is then ``ceil(n_features /
        n_codebooks)``, shorter chunks zero-padded). ``"none"``: one codebook
        on the raw input (``n_codebooks`` and ``key_dim`` are ignored).
    decay : float, default=0.95
        EMA decay of the key statistics, in [0, 1).
    n_epochs : int, default=10
        Passes over the data in :meth:`fit`. :meth:`partial_fit` makes one.
    batch_size : int, default=256
        Samples per EMA step.
    dead_key_threshold : float, default=0.1
        A key whose EMA count falls below ``dead_key_threshold * batch / K``
        (this fraction of uniform usage) is re-seeded at a random head of the
        current batch, and its EMA statistics are reset with it.
    device : str or torch.device, default="auto"
        Where fitting and encoding run; ``"auto"`` picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds the projection, the initial keys, the batch order and revivals.

    Attributes
    ----------
    keys_ : ndarray of shape (`n_codebooks_`, n_keys, `key_dim_`), float32
        The fitted keys.
    projection_ : ndarray of shape (`n_features_in_`, `n_codebooks_` * `key_dim_`), float32
        The fixed projection from inputs to heads.
    key_counts_ : ndarray of shape (`n_codebooks_`, n_keys), float32
        EMA count of heads assigned to each key at the last step.
    n_codebooks_ : int
        Number of codebooks actually used (1 with ``projection="none"``).
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

    X may be a dense array of any float or integer dtype (computed in float32)
    or a scipy sparse matrix (densified a few thousand rows at a time).

    A call of :meth:`fit` or :meth:`partial_fit` that raises -- invalid input,
    a ``KeyboardInterrupt`` -- leaves the codebook exactly as it was before the
    call. Pickles carry a state-format tag; loading one written in a format
    this version cannot read raises ``ValueError``.

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
    """

    def __init__(
        self,
        n_codebooks=64,
        n_keys=4096,
        key_dim=32,
        projection="gaussian",
        decay=0.95,
        n_epochs=10,
        batch_size=256,
        dead_key_threshold=0.1,
        device="auto",
        random_state=None,
    ):
        self.n_codebooks = n_codebooks
        self.n_keys = n_keys
        self.key_dim = key_dim
        self.projection = projection
        self.decay = decay
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.dead_key_threshold = dead_key_threshold
        self.device = device
        self.random_state = random_state

    def _check_params(self, X):
        n_features = X.shape[1]
        check_positive_int(self.n_codebooks, "n_codebooks")
        check_positive_int(self.n_keys, "n_keys")
        check_positive_int(self.key_dim, "key_dim")
        check_choice(self.projection, "projection", PROJECTIONS)
        check_fraction(self.decay, "decay", closed_right=False)
        check_positive_int(self.n_epochs, "n_epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_fraction(self.dead_key_threshold, "dead_key_threshold", max_val=np.inf)
        if self.projection == "partition" and self.n_codebooks > n_features:
            raise ValueError(
                f"Found array with {n_features} feature(s) (shape={X.shape}) while "
                f"projection='partition' with n_codebooks={self.n_codebooks} needs "
                "at least one feature per codebook."
            )
        return resolve_device(self.device)

    @all_or_nothing
    def fit(self, X, y=None):
        """Fit the keys on X by EMA for ``n_epochs`` passes, from scratch.

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
        X = self._validate(X, reset=True)
        device = self._check_params(X)
        self._random_state = check_random_state(self.random_state)
        self._start(X.shape[1])
        state = None
        for _ in range(self.n_epochs):
            state = self._ema_epoch(X, self._random_state.permutation(X.shape[0]), state, device)
        self._store(state)
        self.n_iter_ = self.n_epochs
        return self

    @all_or_nothing
    def partial_fit(self, X, y=None):
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
        first_call = not hasattr(self, "keys_")
        X = self._validate(X, reset=first_call)
        device = self._check_params(X)
        if first_call:
            self._random_state = check_random_state(self.random_state)
            self._start(X.shape[1])
            state = None
        else:
            state = self._load_state(device)
        state = self._ema_epoch(X, np.arange(X.shape[0]), state, device)
        self._store(state)
        self.n_iter_ = 1
        return self

    def transform(self, X):
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
        X = self._validate(X, reset=False)
        device = resolve_device(self.device)
        projection, keys = self.engine_tensors(device)
        return encode_array(X, projection, keys).cpu().numpy()

    def _validate(self, X, reset):
        X = validate_data(self, X, accept_sparse="csr", dtype=FLOAT_DTYPES, reset=reset)
        return check_float32_range(X)

    def engine_tensors(self, device):
        """The projection and keys as torch tensors on ``device``.

        Used by estimators built on this codebook; on the CPU no copy is made.
        """
        check_is_fitted(self)
        projection = torch.as_tensor(self.projection_, device=device)
        keys = torch.as_tensor(self.keys_, device=device)
        return projection, keys

    def _start(self, n_features):
        self.n_codebooks_, self.key_dim_ = head_shape(
            self.projection, n_features, self.n_codebooks, self.key_dim
        )
        self.projection_ = make_projection(
            self.projection, n_features, self.n_codebooks, self.key_dim, self._random_state
        )
        self.n_steps_ = 0

    def _ema_epoch(self, X, order, state, device):
        """One EMA pass over ``X[order]`` in batches; returns the EMA state."""
        generator = torch_generator(draw_seed(self._random_state))
        projection = torch.as_tensor(self.projection_, device=device)
        for start in range(0, len(order), self.batch_size):
            batch = torch.as_tensor(_dense_rows(X[order[start : start + self.batch_size]]))
            heads = project(batch.to(device, torch.float32), projection, self.n_codebooks_)
            if state is None:
                state = init_ema_state(heads, self.n_keys, generator)
            ema_update(state, heads, self.decay, self.dead_key_threshold, generator)
            self.n_steps_ += 1
        return state

    def _store(self, state):
        self.keys_ = state.keys.cpu().numpy()
        self.key_counts_ = state.counts.cpu().numpy()
        self._key_sums = state.sums.cpu().numpy()

    def _load_state(self, device):
        return EMAState(
            keys=torch.as_tensor(self.keys_, device=device).clone(),
            counts=torch.as_tensor(self.key_counts_, device=device).clone(),
            sums=torch.as_tensor(self._key_sums, device=device).clone(),
        )

    @property
    def _n_features_out(self):
        return self.n_codebooks_

    def __getstate__(self):
        return tag_state(super().__getstate__())

    def __setstate__(self, state):
        super().__setstate__(untag_state(state, type(self).__name__))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags
