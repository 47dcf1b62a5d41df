"""The FrozenBackboneTransformer estimator.

What the estimator itself owns: its parameters and their validation, fitting
and transforming batch by batch, progress reports and the on-disk cache of
embeddings. Building the encoder, preparing its inputs and capturing the
embedding are left to ``_models``, ``_inputs`` and ``_capture``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from enum import Enum
from typing import Any, Literal

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_memory
from torch import nn

from .._compat import HasMethods, StrOptions, fit_context
from .._dask import is_dask_array, transform_row_blocks
from .._device import DeviceMixin, resolve_device
from .._doc_link import DocLinkMixin
from .._persistence import all_or_nothing
from .._typing import Device
from .._validation import Count
from ._capture import layer_output, resolve_layer
from ._inputs import inputs_key, on_device, prepare_batch, resolve_preprocess, validate_inputs
from ._models import build_encoder
from ._outputs import pooled_rows
from ._running import precision, prepared_batches, progress_bar

__all__ = ["FrozenBackboneTransformer"]


class FrozenBackboneTransformer(
    DocLinkMixin, DeviceMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
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
        - ``"timm/<name>"``: a timm model (``timm.list_models()``; a pretrained
          tag may follow, ``"timm/resnet18.a1_in1k"``), built with
          ``timm.create_model(name, pretrained=weights is not None,
          num_classes=0)``, so that its output is its pooled features. Needs
          timm (``pip install "skkvb[timm]"``).
        - An ``nn.Module``, e.g. a Hugging Face ``transformers`` model
          (``ViTModel``, ``CLIPVisionModel``, ``BertModel``; see ``output``). It
          is never mutated: the transformer works on a private copy.
        - A bound method of an ``nn.Module``, such as ``model.extract_features``:
          the module is copied and the method called on the copy.
        - Any other callable that maps a batch to embeddings (a text encoder's
          ``encode``, another framework's model): called as it is.
    weights : str, os.PathLike, torchvision ``WeightsEnum`` or None, default="DEFAULT"
        The weights of a torchvision ``backbone``: an entry of its weights enum
        (``"DEFAULT"``, ``"IMAGENET1K_V2"``, ...; downloaded by torchvision on
        first use), ``None`` for an untrained model, or the path of a local
        ``state_dict`` file (``.safetensors`` files too). Of a timm backbone:
        ``"DEFAULT"`` (timm's pretrained weights of the name and tag, from the
        Hugging Face Hub or its cache), ``None`` (untrained, nothing
        downloaded) or a local weights file. For a module backbone only a path
        has an effect (it is loaded into the private copy); ``"DEFAULT"`` and
        ``None`` leave the module's own weights.
    layer : str or None, default=None
        Name of the submodule (as in ``named_modules()``) whose output is the
        embedding, captured by a forward hook; the forward pass stops there. If
        the submodule runs several times, its first output is used. ``None``
        means the input of the final classification layer for a torchvision
        model (by name or instance), and the backbone's output otherwise.
    output : str, int or None, default=None
        Which entry of a dict or tuple output (of the backbone, or of
        ``layer``) is the embedding: a key -- a transformers ``ModelOutput`` is
        a dict, e.g. ``"last_hidden_state"`` -- or an index 0, 1, ... (of a
        dict, among its entries that are not None, as a ``ModelOutput``
        indexes itself).
        ``None``: of a dict, the first of ``"pooler_output"``,
        ``"last_hidden_state"``, ``"image_embeds"`` and ``"text_embeds"`` that
        it holds and is not None; of a tuple or list, its first element if that
        is a tensor; any other output as it is. A key that is not there raises
        a ``ValueError`` listing those that are.
    pooling : {"avg", "mean", "max", "cls", "flatten"} or callable, default="avg"
        Reduction of outputs with more than two dimensions to one row per
        sample; ``(N, D)`` outputs are left as they are. A 3-D output is read as
        tokens ``(N, T, D)`` (a transformer's hidden states): ``"avg"`` and
        ``"mean"`` average the tokens, ``"max"`` takes their maximum -- both
        over the tokens of the inputs' ``attention_mask`` when the inputs carry
        one, so padding does not count -- ``"cls"`` takes the first token and
        ``"flatten"`` concatenates them. A 4-D or larger output is read as
        feature maps ``(N, C, *spatial)``: ``"avg"``/``"mean"`` and ``"max"``
        pool over the spatial positions, ``"flatten"`` concatenates them, and
        ``"cls"`` raises a ``ValueError``. A callable maps the output tensor
        (in the encoder's dtype, mask not applied) to an ``(N, D)`` tensor --
        e.g. ``lambda Z: Z.mean(2)`` for a 1-D convolution's ``(N, C, L)``
        maps, which would otherwise be read as tokens.
    preprocess : "auto", callable or None, default="auto"
        How inputs become the encoder's input.

        - ``"auto"``: the weights' own transforms when there are torchvision
          weights (for a local weights file, those of the enum entry with the same
          file name, else of ``DEFAULT``) or timm weights (timm's resize, center
          crop and normalisation for the model); otherwise images are converted to
          float tensors, ``uint8`` values scaled to ``[0, 1]``. For a callable
          backbone that is not part of a torch module, same as ``None``.
        - A callable: applied to each sample, a ``(C, H, W)`` tensor -- ``uint8``
          for integer and bool image arrays, PIL images and files, float
          otherwise -- and returning the encoder's input for that sample.
        - ``None``: batches reach the encoder as they are: numeric arrays as
          float tensors in the dtype of the module's parameters (as numpy arrays
          for a callable that is not part of a torch module), lists unchanged --
          e.g. strings for a text encoder.

        A dict of keyword inputs (``X`` a tokenizer's output) is never
        preprocessed: with a ``preprocess`` callable, or torchvision or timm
        weights' transforms, it raises a ``ValueError``.
    dtype : {"auto", "float32", "float16", "bfloat16"}, default="auto"
        The precision of the forward pass. ``"auto"``: the dtype of the
        module's parameters, as they are (inputs are cast to it).
        ``"float32"``: the private copy is cast to float32.
        ``"float16"``, ``"bfloat16"``: the forward pass runs under
        ``torch.autocast`` to that dtype (matrix products and convolutions in
        it, precision-sensitive operations in float32). torch's CPU autocast
        runs both (how fast depends on the processor's support for them); a
        dtype the device cannot autocast to (a GPU without bfloat16) raises a
        ``ValueError`` in ``fit``. The embeddings are float32 whatever the
        dtype.
    batch_size : int, default=64
        Number of samples per forward pass.
    num_workers : int, default=0
        Number of worker processes that prepare the batches (read and decode
        image files, apply ``preprocess``), through a
        ``torch.utils.data.DataLoader``; 0 prepares them in this process, one
        before each forward pass. The batches, and so the embeddings, are the
        same either way. Workers receive the inputs and ``preprocess``, which
        must then be picklable where processes are spawned (Windows, macOS).
    pin_memory : bool, default=False
        Prepare batches in page-locked memory, which copies faster to a CUDA
        device; ignored on other devices.
    device : str or torch.device, default="auto"
        Where the encoder runs. ``"auto"`` picks CUDA when available; a GPU
        that is not available here gives the CPU, with a warning.
    memory : str, os.PathLike, joblib.Memory or None, default=None
        Cache of embeddings: the same inputs through the same encoder
        configuration (backbone weights, ``layer``, ``output``, ``pooling``,
        ``preprocess``, ``dtype``) are computed once. A path is a cache folder.
        A call that fails (an unreadable image file) caches nothing.
    verbose : int, default=0
        A tqdm progress bar over the samples of ``transform``, on stderr, when
        positive. On a terminal it is redrawn in place; when stderr is not a
        terminal (a log, a notebook's captured
        output), each update is a line of its own: one at the start, then at
        most one every 30 seconds (from 2 on, one per batch), and the final
        count once.

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
        ``ImageClassification`` transform of the weights, or timm's data
        configuration (resize, center crop, normalisation) as torchvision
        transforms.
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
    Accepted inputs (``preprocess`` not None; with None, see that parameter;
    keyword inputs whatever it is):

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
      itself (its pickled state), not by what its items read. A Dataset whose
      first item is an ``(input, label)`` pair -- a tuple or list of length 2
      whose first element is a PIL image, a numpy array or a tensor, as
      torchvision's datasets return -- is read as the Dataset of its inputs;
      the labels are ignored.
    - Keyword inputs: a dict (or a transformers ``BatchEncoding``) of tensors,
      arrays or rectangular lists, such as a tokenizer's output with
      ``input_ids`` and ``attention_mask`` (pad them:
      ``tokenizer(texts, padding=True)``). Each entry holds one row per sample
      along its first axis; batches are slices of every entry, and the model is
      called with them as keyword arguments, ``model(**batch)``. Float
      entries (``pixel_values``) reach it in its dtype, others unchanged.

    Batches reach a torch encoder in the dtype of its parameters (float16,
    bfloat16, float64, ...) unless ``dtype`` says otherwise; the embeddings
    are float32 whatever that dtype. The output of the encoder (or ``layer``),
    after ``output`` chose among a dict's or tuple's entries, must be a tensor
    or numeric array of shape ``(n_samples, ...)``: a dict without the entry
    asked for, a tuple of tensors (such as ``hidden_states``), a scalar,
    ``None``, a tensor with another number of rows or ``pooling="cls"`` on
    feature maps raises a ``ValueError`` naming what came back.

    For a transformers model, ``output=None`` embeds ``pooler_output`` where
    the model has one (ViT's and BERT's: a dense layer and tanh on the first
    token), its ``last_hidden_state`` otherwise, pooled by ``pooling``.
    ``output="last_hidden_state"`` with ``pooling="cls"`` is the first token,
    with ``pooling="mean"`` the mean of the (unpadded) tokens.

    Without internet, torchvision and timm weights cannot be downloaded:
    ``fit`` then raises an ``OSError`` that names what to fetch and how to pass
    it with ``weights=<path>``. transformers models are passed as modules,
    loaded by the caller (``ViTModel.from_pretrained(...)``). Neither timm nor
    transformers is imported by skkvb unless a ``"timm/..."`` backbone asks
    for timm. Weights files are read with
    ``torch.load(..., weights_only=True)``, which loads tensors and refuses
    arbitrary pickled objects (``.safetensors`` files hold tensors only).

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
        "output": [str, Count(low=0), None],
        "pooling": [StrOptions({"avg", "mean", "max", "cls", "flatten"}), callable],
        "preprocess": [StrOptions({"auto"}), callable, None],
        "dtype": [StrOptions({"auto", "float32", "float16", "bfloat16"})],
        "batch_size": [Count()],
        "num_workers": [Count(low=0)],
        "pin_memory": ["boolean"],
        "device": [str, torch.device, None],
        "memory": [str, os.PathLike, HasMethods(["cache"]), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone: str | nn.Module | Callable[..., Any] = "resnet50",
        weights: str | os.PathLike[str] | Enum | None = "DEFAULT",
        layer: str | None = None,
        output: str | int | None = None,
        pooling: str | Callable[..., Any] = "avg",
        preprocess: str | Callable[..., Any] | None = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        device: Device = "auto",
        memory: str | os.PathLike[str] | joblib.Memory | None = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.output = output
        self.pooling = pooling
        self.preprocess = preprocess
        self.dtype = dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.device = device
        self.memory = memory
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    @all_or_nothing
    def fit(self, X: Any, y: None = None) -> FrozenBackboneTransformer:
        """Build the frozen encoder and measure its embedding size on ``X[:1]``.

        Parameters
        ----------
        X : array-like, list, Dataset or dict
            Inputs; see the class Notes for the accepted forms.
        y : None
            Ignored.

        Returns
        -------
        self : FrozenBackboneTransformer
            The fitted transformer.
        """
        self.device_ = resolve_device(self.device)
        precision(self.dtype, self.device_)  # a dtype this device cannot run fails here
        module, self._encoder_method, weights_entry = build_encoder(
            self.backbone, self.weights, progress=self.verbose > 0
        )
        self.encoder_ = module if module is not None else self.backbone
        if module is not None:
            self.encoder_.to(self.device_)
            if self.dtype == "float32":
                self.encoder_.float()
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

    def transform(self, X: Any) -> np.ndarray:
        """Embed ``X`` with the frozen encoder.

        A ``dask.array.Array`` chunked along its first axis is embedded
        lazily, one task per block of samples (see :ref:`scaling_out`).

        Parameters
        ----------
        X : array-like, list, Dataset, dict or dask array
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
        chunks, progress = [], progress_bar(len(X), verbose)
        # closed at once, also on an error, so that DataLoader workers stop
        batches = contextlib.closing(self._batches(X))
        with torch.inference_mode(), progress, batches as prepared:
            for batch in prepared:
                with precision(self.dtype, self.device_):
                    chunks.append(self._forward(batch))
                progress.update(len(chunks[-1]))
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _batches(self, X):
        """The batches of ``X``, on the device, in the encoder's dtype."""
        torch_encoder = isinstance(self.encoder_, nn.Module)
        prepare = functools.partial(
            prepare_batch,
            mode=self._input_mode,
            preprocess=self.preprocess_,
            torch_encoder=torch_encoder,
        )
        pin = self.pin_memory and self.device_.type == "cuda"  # pinning speeds GPU copies only
        for batch in prepared_batches(X, self.batch_size, prepare, self.num_workers, pin):
            yield on_device(batch, self.device_, self.encoder_, pinned=pin)

    def _forward(self, batch):
        call = self.encoder_
        if self._encoder_method is not None:  # the backbone's method, bound to the private copy
            call = self._encoder_method.__get__(self.encoder_)
        keywords = isinstance(batch, dict)
        run = functools.partial(call, **batch) if keywords else functools.partial(call, batch)
        out = layer_output(run, self.encoder_, self.layer_, self._capture_input)
        mask = batch.get("attention_mask") if keywords else None
        n_samples = len(next(iter(batch.values()))) if keywords else len(batch)
        return pooled_rows(out, self.output, self.pooling, mask, n_samples, self.layer_)

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
            self.output,
            self.pooling,
            self.dtype,
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
