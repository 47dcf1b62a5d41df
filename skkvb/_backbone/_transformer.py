"""The FrozenBackboneTransformer estimator.

What the estimator itself owns: its parameters and their validation, fitting
and transforming batch by batch, progress reports and the on-disk cache of
embeddings. Building the encoder, preparing its inputs and capturing the
embedding are left to ``_models``, ``_inputs`` and ``_capture``.
"""

import os
import time
from enum import Enum

import joblib
import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.validation import check_is_fitted, check_memory
from torch import nn

from .._dask import is_dask_array, transform_row_blocks
from .._device import DeviceMixin, resolve_device
from .._persistence import all_or_nothing
from .._validation import Count
from ._capture import layer_output, pooled_rows, resolve_layer
from ._inputs import (
    as_is_batch,
    decode_batch,
    in_module_dtype,
    inputs_key,
    resolve_preprocess,
    validate_inputs,
)
from ._models import build_encoder

__all__ = ["FrozenBackboneTransformer"]


class FrozenBackboneTransformer(
    DeviceMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Embeddings of a frozen pre-trained encoder, as a scikit-learn transformer.

    The encoder is never trained: ``fit`` builds (or copies) it, puts it in eval
    mode with gradients off and checks the size of its embeddings; ``transform``
    runs it under ``torch.inference_mode`` batch by batch and returns a float32
    array of shape ``(n_samples, n_features_out)``.

    Parameters
    ----------
    backbone : str, torch.nn.Module or callable, default="resnet50"
        The encoder.

        - A torchvision model name (see ``torchvision.models.list_models()``),
          built with ``torchvision.models.get_model`` and the weights ``weights``.
        - An ``nn.Module``. It is never mutated: the transformer works on a
          private copy.
        - A bound method of an ``nn.Module``, such as ``model.extract_features``:
          the module is copied and the method called on the copy.
        - Any other callable that maps a batch to embeddings (a text encoder's
          ``encode``, another framework's model): called as it is.
    weights : str, os.PathLike, torchvision ``WeightsEnum`` or None, default="DEFAULT"
        The weights of a torchvision ``backbone``: an entry of its weights enum
        (``"DEFAULT"``, ``"IMAGENET1K_V2"``, ...; downloaded by torchvision on
        first use), ``None`` for an untrained model, or the path of a local
        ``state_dict`` file. For a module backbone only a path has an effect (it
        is loaded into the private copy); ``"DEFAULT"`` and ``None`` leave the
        module's own weights.
    layer : str or None, default=None
        Name of the submodule (as in ``named_modules()``) whose output is the
        embedding, captured by a forward hook; the forward pass stops there. If
        the submodule runs several times, its first output is used. ``None``
        means the input of the final classification layer for a torchvision
        model (by name or instance), and the backbone's output otherwise.
    pooling : {"avg", "max", "flatten"} or callable, default="avg"
        Reduction of outputs with more than two dimensions, read as
        ``(N, C, *spatial)`` maps: average or maximum over the spatial positions,
        or flattening. A callable maps the output tensor to an ``(N, D)`` tensor.
    preprocess : "auto", callable or None, default="auto"
        How inputs become the encoder's input.

        - ``"auto"``: the weights' own transforms when there are torchvision
          weights (for a local weights file, those of the enum entry with the same
          file name, else of ``DEFAULT``); otherwise images are converted to
          float tensors, ``uint8`` values scaled to ``[0, 1]``. For a callable
          backbone that is not part of a torch module, same as ``None``.
        - A callable: applied to each sample, a ``(C, H, W)`` tensor -- ``uint8``
          for integer and bool image arrays, PIL images and files, float
          otherwise -- and returning the encoder's input for that sample.
        - ``None``: batches reach the encoder as they are: numeric arrays as
          float tensors in the dtype of the module's parameters (as numpy arrays
          for a callable that is not part of a torch module), lists unchanged --
          e.g. strings for a text encoder.
    batch_size : int, default=64
        Number of samples per forward pass.
    device : str or torch.device, default="auto"
        Where the encoder runs. ``"auto"`` picks CUDA when available; a GPU
        that is not available here gives the CPU, with a warning.
    memory : str, os.PathLike, joblib.Memory or None, default=None
        Cache of embeddings: the same inputs through the same encoder
        configuration (backbone weights, ``layer``, ``pooling``, ``preprocess``)
        are computed once. A path is a cache folder.
    verbose : int, default=0
        Prints progress of ``transform`` when positive (every batch from 2 on).

    Attributes
    ----------
    encoder_ : torch.nn.Module or callable
        The private, frozen copy of the encoder (the callable itself for a plain
        callable backbone).
    layer_ : str or None
        Name of the submodule whose output (or, for the final classification
        layer, input) is captured; ``None`` when the backbone's output is used.
    preprocess_ : callable or None
        The per-sample preprocessing in use, e.g. torchvision's
        ``ImageClassification`` transform of the weights.
    device_ : torch.device
        The device the encoder runs on.
    embedding_dim_ : int
        Number of features of each embedding.
    n_features_in_ : int
        Number of features seen during ``fit``; only set when ``X`` is a 2-D array.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features seen during ``fit``; only set when ``X`` is a
        DataFrame with string column names.

    See Also
    --------
    skkvb.KeyValueBottleneckClassifier : The classifier these embeddings feed.
    skkvb.StreamingPipeline : A pipeline that streams batches with ``partial_fit``.

    Notes
    -----
    Accepted inputs (``preprocess`` not None; with None, see that parameter):

    - Image arrays ``(N, H, W, C)`` of ``uint8``, other integer dtypes or
      ``bool``, and ``(N, H, W)`` grayscale. Integer images must hold values in
      ``[0, 255]`` and are read like ``uint8`` (``ValueError`` otherwise); bool
      is 0/255, as PIL converts 1-bit images. Channels are last, except that
      ``(N, C, H, W)`` is detected when axis 1 alone is 1, 3 or 4 long (when
      both axes are, channels-last wins). One channel is repeated to three and
      a fourth (alpha) dropped; other channel counts are kept.
    - Float arrays ``(N, C, H, W)``: the encoder's input, channels unchanged
      (for torchvision weights, values in ``[0, 1]``); ``(N, D)`` feature rows.
    - Lists of PIL images (converted to RGB), of image arrays ``(H, W[, C])``
      of any dtype (each read by the rules above: integer range, channel axis,
      gray and alpha) or of image file paths -- files are loaded lazily, one
      batch at a time. Images of different sizes need a ``preprocess`` that
      brings them to one size.
    - A map-style ``torch.utils.data.Dataset`` (or any object with ``len`` and
      indexing but no ``__iter__``), read by index from 0 to ``len(X) - 1``,
      never further: of samples like a list's, one batch at a time; of numeric
      samples (rows, tensors), once into one array. An ``IterableDataset``
      raises ``TypeError``. With ``memory``, a Dataset is keyed by the object
      itself (its pickled state), not by what its items read.

    Batches reach a torch encoder in the dtype of its parameters (float16,
    bfloat16, float64, ...); the embeddings are float32 whatever that dtype. The
    output of the encoder (or ``layer``) must be a tensor or numeric array of
    shape ``(n_samples, ...)``, or a tuple or list starting with one; a dict
    (such as a ``ModelOutput``), a scalar, ``None`` or a tensor with another
    number of rows raises a ``ValueError`` naming what came back.

    Without internet, torchvision weights cannot be downloaded: ``fit`` then
    raises an ``OSError`` that names the file to fetch and how to pass it with
    ``weights=<path>``. Weights files are read with
    ``torch.load(..., weights_only=True)``, which loads tensors and refuses
    arbitrary pickled objects.

    A call of ``fit`` that raises leaves the transformer as it was before the
    call. Pickles hold the encoder on the CPU; loaded on a machine without the
    GPU it ran on, it runs on the CPU, with a warning. They carry a
    state-format tag; loading one written in a format this version cannot read
    raises ``ValueError``.

    Invalid hyperparameters raise
    :class:`~sklearn.utils._param_validation.InvalidParameterError` (a
    ``ValueError``) naming the parameter, when :meth:`fit` is called.

    References
    ----------
    .. [1] Träuble, F., Goyal, A., Rahaman, N., Mozer, M., Kawaguchi, K.,
       Bengio, Y., and Schölkopf, B. "Discrete Key-Value Bottleneck." ICML 2023.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skkvb import FrozenBackboneTransformer
    >>> encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...                               torch.nn.Conv2d(8, 4, 3))
    >>> images = np.random.RandomState(0).randint(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    >>> embedder = FrozenBackboneTransformer(encoder, layer="1", device="cpu")
    >>> Z = embedder.fit_transform(images)
    >>> Z.shape, Z.dtype
    ((10, 8), dtype('float32'))
    >>> embedder.get_feature_names_out()[:2]
    array(['frozenbackbonetransformer0', 'frozenbackbonetransformer1'], dtype=object)
    """

    _parameter_constraints: dict = {
        "backbone": [str, callable],
        # Enum: torchvision's WeightsEnum by its base class, so that importing
        # skkvb does not import torchvision.
        "weights": [str, os.PathLike, Enum, None],
        "layer": [str, None],
        "pooling": [StrOptions({"avg", "max", "flatten"}), callable],
        "preprocess": [StrOptions({"auto"}), callable, None],
        "batch_size": [Count()],
        "device": [str, torch.device, None],
        "memory": [str, os.PathLike, HasMethods(["cache"]), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone="resnet50",
        weights="DEFAULT",
        layer=None,
        pooling="avg",
        preprocess="auto",
        batch_size=64,
        device="auto",
        memory=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.device = device
        self.memory = memory
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    @all_or_nothing
    def fit(self, X, y=None):
        """Build the frozen encoder and measure its embedding size on ``X[:1]``.

        Parameters
        ----------
        X : array-like or list
            Inputs; see the class Notes for the accepted forms.
        y : None
            Ignored.

        Returns
        -------
        self : FrozenBackboneTransformer
            The fitted transformer.
        """
        self.device_ = resolve_device(self.device)
        module, self._encoder_method, weights_entry = build_encoder(
            self.backbone, self.weights, progress=self.verbose > 0
        )
        self.encoder_ = module if module is not None else self.backbone
        if module is not None:
            self.encoder_.to(self.device_)
        self.layer_, self._capture_input = resolve_layer(module, self.layer, self.backbone)
        self._input_mode, self.preprocess_ = resolve_preprocess(
            self.preprocess, weights_entry, torch_backbone=module is not None
        )
        if is_dask_array(X):  # only X[:1] is embedded: fetch no more of it
            X = X[:1].compute()
        X = validate_inputs(self, X, self._input_mode, reset=True)
        self.embedding_dim_ = self._embed(X[:1], verbose=0).shape[1]
        self._fingerprint = None if self.memory is None else self._encoder_fingerprint()
        return self

    def transform(self, X):
        """Embed ``X`` with the frozen encoder.

        A ``dask.array.Array`` chunked along its first axis is embedded
        lazily, one task per block of samples (see :ref:`scaling_out`).

        Parameters
        ----------
        X : array-like, list or dask array
            Inputs; see the class Notes for the accepted forms.

        Returns
        -------
        Z : ndarray of shape (n_samples, `embedding_dim_`), dtype float32
            The embeddings; a dask array with the row chunks of X when X is one.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return transform_row_blocks(self, X, self.embedding_dim_, np.float32)
        X = validate_inputs(self, X, self._input_mode, reset=False)
        Z = self._cached_embed(X)
        if Z.shape[1] != self.embedding_dim_:
            raise ValueError(
                f"The encoder gave {Z.shape[1]} features per sample, but {self.embedding_dim_} "
                "during fit; inputs of another size change the embedding size with "
                "pooling='flatten'."
            )
        return Z

    @property
    def _n_features_out(self):
        return self.embedding_dim_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- embedding ----------------------------------------------------------

    def _embed(self, X, verbose):
        progress = _Progress(len(X), verbose)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(X), self.batch_size):
                batch = self._prepare(X[start : start + self.batch_size])
                chunks.append(self._forward(batch))
                progress.update(len(chunks[-1]))
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _prepare(self, chunk):
        """One slice of validated inputs -> what the encoder is called with."""
        if self._input_mode == "as_is":
            torch_encoder = isinstance(self.encoder_, nn.Module)
            batch = as_is_batch(chunk, self.device_ if torch_encoder else None)
        else:
            batch = decode_batch(chunk, self._input_mode, self.preprocess_).to(self.device_)
        return in_module_dtype(batch, self.encoder_)

    def _forward(self, batch):
        call = self.encoder_
        if self._encoder_method is not None:  # the backbone's method, bound to the private copy
            call = self._encoder_method.__get__(self.encoder_)
        out = layer_output(call, batch, self.encoder_, self.layer_, self._capture_input)
        return pooled_rows(out, self.pooling, len(batch), self.layer_)

    # -- caching ------------------------------------------------------------

    def _cached_embed(self, X):
        memory = check_memory(_fspath_or_same(self.memory))
        if getattr(memory, "location", None) is None:
            return self._embed(X, verbose=self.verbose)
        fingerprint = self._fingerprint or self._encoder_fingerprint()
        cached = memory.cache(_cached_embeddings, ignore=["embed"])
        key = inputs_key(X, self._input_mode)
        return cached(fingerprint, key, embed=lambda: self._embed(X, self.verbose))

    def _encoder_fingerprint(self):
        """A hash of everything that decides the embeddings, except the inputs."""
        encoder = self.encoder_
        if isinstance(encoder, nn.Module):
            state = {name: _to_numpy(value) for name, value in encoder.state_dict().items()}
            encoder = (type(encoder).__module__, type(encoder).__qualname__, repr(encoder), state)
        parts = (
            encoder,
            _qualname(self._encoder_method),
            self.layer_,
            self._capture_input,
            self.pooling,
            self._input_mode,
            self.preprocess_,
        )
        try:
            return joblib.hash(parts)
        except Exception as exc:  # an unpicklable callable cannot key a cache
            raise ValueError(
                "memory needs a backbone, pooling and preprocess that joblib can hash "
                f"(named functions rather than lambdas): {exc}"
            ) from exc


def _cached_embeddings(fingerprint, inputs_key, embed):
    """Cached by joblib.Memory on (fingerprint, inputs_key); ``embed`` is ignored."""
    return embed()


def _fspath_or_same(memory):
    """check_memory takes a str location, not a path object."""
    return os.fspath(memory) if isinstance(memory, os.PathLike) else memory


def _to_numpy(tensor):
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def _qualname(function):
    return None if function is None else f"{function.__module__}.{function.__qualname__}"


class _Progress:
    """Prints samples done and rate, at most ten times (verbose=1) or every batch."""

    def __init__(self, n_samples, verbose):
        self.n_samples, self.verbose = n_samples, verbose
        self.done, self.next_report, self.start = 0, 0, time.perf_counter()

    def update(self, n_done):
        self.done += n_done
        if self.verbose <= 0 or (self.done < self.next_report and self.done < self.n_samples):
            return
        self.next_report = self.done + (0 if self.verbose > 1 else self.n_samples / 10)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        done = f"{self.done}/{self.n_samples}"
        print(f"[FrozenBackboneTransformer] {done} samples, {rate:.1f} samples/s")
