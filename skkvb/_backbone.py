"""FrozenBackboneTransformer: a frozen pre-trained encoder as a scikit-learn transformer.

The DKVB sits on top of an encoder that is never trained. This module turns such
an encoder -- a torchvision model by name, any ``torch.nn.Module``, or any callable
-- into a stateless transformer: inputs in, float32 embeddings out, batch by batch,
optionally cached on disk.
"""

import copy
import difflib
import inspect
import numbers
import os
import pickle
import threading
import time
import warnings

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_scalar
from sklearn.utils.validation import check_array, check_is_fitted, check_memory, validate_data
from torch import nn

from ._dask import is_dask_array, transform_row_blocks
from ._device import resolve_device
from ._persistence import all_or_nothing, tag_state, untag_state
from ._validation import check_choice, check_positive_int

__all__ = ["FrozenBackboneTransformer"]

_POOLINGS = ("avg", "max", "flatten")
_WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class _LayerCaptured(Exception):
    """Raised by the capture hook to stop the forward pass once the layer ran."""


class FrozenBackboneTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
          for ``uint8`` arrays, PIL images and files, float otherwise -- and
          returning the encoder's input for that sample.
        - ``None``: batches reach the encoder as they are: numeric arrays as
          float32 tensors (as numpy arrays for a callable that is not part of a
          torch module), lists unchanged -- e.g. strings for a text encoder.
    batch_size : int, default=64
        Number of samples per forward pass.
    device : str or torch.device, default="auto"
        Where the encoder runs. ``"auto"`` picks CUDA when available.
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
    Accepted inputs: numpy arrays ``(N, H, W, C)`` of ``uint8``, ``(N, H, W)``
    grayscale (repeated to three channels), ``(N, C, H, W)`` float (for
    torchvision weights, values in ``[0, 1]``), ``(N, D)`` feature rows, and lists
    of PIL images, of ``(H, W[, C])`` arrays or of image file paths -- files are
    loaded lazily, one batch at a time. Images of different sizes need a
    ``preprocess`` that brings them to one size.

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
        self._check_params()
        self.device_ = resolve_device(self.device)
        module, self._encoder_method, weights_entry = _build_encoder(
            self.backbone, self.weights, progress=self.verbose > 0
        )
        self.encoder_ = module if module is not None else self.backbone
        if module is not None:
            self.encoder_.to(self.device_)
        self.layer_, self._capture_input = _resolve_layer(module, self.layer, self.backbone)
        self._input_mode, self.preprocess_ = _resolve_preprocess(
            self.preprocess, weights_entry, torch_backbone=module is not None
        )
        if is_dask_array(X):  # only X[:1] is embedded: fetch no more of it
            X = X[:1].compute()
        X = self._validate_inputs(X, reset=True)
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
        X = self._validate_inputs(X, reset=False)
        memory = self._memory()
        if getattr(memory, "location", None) is None:
            Z = self._embed(X, verbose=self.verbose)
        else:
            fingerprint = self._fingerprint or self._encoder_fingerprint()
            cached = memory.cache(_cached_embeddings, ignore=["embed"])
            Z = cached(fingerprint, self._inputs_key(X), embed=lambda: self._embed(X, self.verbose))
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

    def __getstate__(self):
        state = self.__dict__.copy()
        device = state.get("device_")
        if device is not None and device.type != "cpu" and isinstance(self.encoder_, nn.Module):
            state["encoder_"] = copy.deepcopy(self.encoder_).to("cpu")
        return tag_state(state)

    def __setstate__(self, state):
        state = untag_state(state, type(self).__name__)
        self.__dict__.update(state)
        device = state.get("device_")
        if device is None or device.type == "cpu" or not isinstance(self.encoder_, nn.Module):
            return
        try:
            if device.type == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available")
            self.encoder_.to(device)
        except (RuntimeError, AssertionError):
            warnings.warn(
                f"This transformer was saved on {device}, which is not available here; "
                "its encoder was loaded on the CPU.",
                UserWarning,
                stacklevel=2,
            )
            self.device_ = torch.device("cpu")
            self.encoder_.to(self.device_)

    # -- validation ---------------------------------------------------------

    def _check_params(self):
        check_positive_int(self.batch_size, "batch_size")
        check_scalar(self.verbose, "verbose", target_type=numbers.Integral, min_val=0)
        if not callable(self.pooling):
            check_choice(self.pooling, "pooling", _POOLINGS)
        if not (
            self.preprocess is None or callable(self.preprocess) or _is_str(self.preprocess, "auto")
        ):
            raise ValueError(
                f"preprocess must be 'auto', a callable or None, got {self.preprocess!r}."
            )
        if self.layer is not None and not isinstance(self.layer, str):
            raise ValueError(f"layer must be a submodule name or None, got {self.layer!r}.")
        self._memory()

    def _memory(self):
        memory = self.memory
        return check_memory(os.fspath(memory) if isinstance(memory, os.PathLike) else memory)

    def _validate_inputs(self, X, reset):
        """Return ``X`` as a validated numeric array or as a list of samples."""
        if _is_sequence(X):
            if len(X) == 0:
                raise ValueError("X is empty: at least one sample is required.")
            if self._input_mode == "as_is" or _is_image_item(X[0]):
                return list(X)
        if _ndim(X) <= 2:
            return validate_data(self, X, reset=reset, dtype="numeric")
        if reset:
            for name in ("n_features_in_", "feature_names_in_"):
                self.__dict__.pop(name, None)
        return check_array(X, allow_nd=True, dtype="numeric")

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
            if isinstance(chunk, np.ndarray) and isinstance(self.encoder_, nn.Module):
                return torch.tensor(chunk, dtype=torch.float32, device=self.device_)
            return chunk
        if isinstance(chunk, list):
            samples = [_decode_sample(item) for item in chunk]  # their sizes may differ
            batch = _stack(
                samples if self.preprocess_ is None else [self.preprocess_(s) for s in samples]
            )
        else:
            batch = _decode_array(chunk)
            if self._input_mode == "per_sample":
                batch = torch.stack([self.preprocess_(sample) for sample in batch])
            elif self._input_mode == "transforms":  # torchvision's presets take whole batches
                batch = self.preprocess_(batch)
        if self.preprocess_ is None and batch.dtype == torch.uint8:
            batch = batch.float().div_(255)
        return batch.float().to(self.device_)

    def _forward(self, batch):
        call = self.encoder_
        if self._encoder_method is not None:
            call = self._encoder_method.__get__(self.encoder_)
        if self.layer_ is None:
            out = call(batch)
        else:
            out = _run_to_layer(
                call, batch, self.encoder_.get_submodule(self.layer_), self._capture_input
            )
            if out is None:
                raise ValueError(f"layer={self.layer_!r} did not run during the forward pass.")
        return _pool(_as_tensor(out), self.pooling).float().cpu().numpy()

    # -- caching ------------------------------------------------------------

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

    def _inputs_key(self, X):
        if not isinstance(X, list) or self._input_mode == "as_is":
            return X
        return [_file_key(item) if isinstance(item, (str, os.PathLike)) else item for item in X]


def _cached_embeddings(fingerprint, inputs_key, embed):
    """Cached by joblib.Memory on (fingerprint, inputs_key); ``embed`` is ignored."""
    return embed()


# -- building the encoder ---------------------------------------------------


def _build_encoder(backbone, weights, progress):
    """Return ``(private module or None, unbound method or None, weights entry or None)``."""
    if isinstance(backbone, str):
        module, entry = _torchvision_model(backbone, weights, progress)
        return _freeze(module), None, entry
    if isinstance(backbone, nn.Module):
        return _freeze(_module_with_weights(copy.deepcopy(backbone), weights)), None, None
    if inspect.ismethod(backbone) and isinstance(backbone.__self__, nn.Module):
        module = _module_with_weights(copy.deepcopy(backbone.__self__), weights)
        return _freeze(module), backbone.__func__, None
    if callable(backbone):
        if _is_weights_file(weights):
            raise ValueError(
                f"weights={weights!r} is a weights file, but backbone={backbone!r} is not a "
                "torch module to load it into."
            )
        return None, None, None
    raise ValueError(
        "backbone must be a torchvision model name, an nn.Module or a callable, "
        f"got backbone={backbone!r}."
    )


def _freeze(module):
    module.eval()
    module.requires_grad_(False)
    return module


def _torchvision_model(name, weights, progress):
    import torchvision.models as tvm

    try:
        builder = tvm.get_model_builder(name)
    except ValueError:
        close = difflib.get_close_matches(name, tvm.list_models(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"backbone={name!r} is not a torchvision model name (see "
            f"torchvision.models.list_models()).{hint}"
        ) from None
    if weights is None:
        return builder(weights=None), None
    if _is_weights_file(weights):
        model = _load_weights_file(builder(weights=None), weights)
        return model, _weights_entry_for_file(name, weights)
    entry = _weights_entry(name, weights)
    try:
        return builder(weights=entry, progress=progress), entry
    except OSError as exc:  # URLError, socket errors, an unreachable host
        raise OSError(_offline_message(name, entry, exc)) from None


def _weights_entry(name, weights):
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(name).verify(weights)
    except (ValueError, KeyError, TypeError):
        available = [entry.name for entry in tvm.get_model_weights(name)]
        raise ValueError(
            f"weights={weights!r} is not a weights entry of backbone={name!r}; use one of "
            f"{['DEFAULT', *available]}, None, or the path of a local state_dict file."
        ) from None


def _weights_entry_for_file(name, path):
    """The enum entry whose download has this file's name, else ``DEFAULT``."""
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except ValueError:
        return None
    filename = os.path.basename(os.fspath(path))
    for entry in enum:
        if os.path.basename(entry.url) == filename:
            return entry
    return enum.DEFAULT


def _offline_message(name, entry, exc):
    import torch.hub

    filename = os.path.basename(entry.url)
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    return (
        f"Could not download the weights {entry} of backbone={name!r} ({exc}); this "
        "machine seems to be offline. Fetch the file elsewhere from\n"
        f"    {entry.url}\n"
        f"then either pass weights='/path/to/{filename}' (a local state_dict file) or "
        f"put it in {checkpoints}, where torchvision looks before downloading."
    )


def _is_weights_file(weights):
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return os.path.isfile(weights) or os.sep in weights or weights.endswith(_WEIGHTS_FILE_SUFFIXES)


def _load_weights_file(module, path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"weights={path!r} is not an existing file.")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(
            f"weights={path!r} is not a state_dict file torch.load can read: {exc}"
        ) from None
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"weights={path!r} does not fit the backbone: {exc}") from None
    return module


def _module_with_weights(module, weights):
    if _is_weights_file(weights):
        return _load_weights_file(module, weights)
    if weights is not None and not _is_str(weights, "DEFAULT"):
        raise ValueError(
            f"weights={weights!r} applies to a torchvision model name only; a module "
            "backbone keeps its own weights unless weights is a state_dict file path."
        )
    return module


def _resolve_layer(module, layer, backbone):
    """Return ``(layer name or None, capture its input?)``."""
    if layer is not None:
        if module is None:
            raise ValueError(
                f"layer={layer!r} needs a torch module backbone, got backbone={backbone!r}."
            )
        names = [name for name, _ in module.named_modules() if name]
        if layer not in names:
            close = difflib.get_close_matches(layer, names, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"layer={layer!r} is not a submodule of the backbone.{hint}")
        return layer, False
    if module is not None and _is_torchvision_model(module) and not inspect.ismethod(backbone):
        return _final_layer(module), True
    return None, False


def _is_torchvision_model(module):
    return type(module).__module__.startswith("torchvision.models.")


def _final_layer(module):
    """Name of the final classification layer: the last Linear, else the last Conv2d."""
    for kind in (nn.Linear, nn.Conv2d):
        names = [name for name, sub in module.named_modules() if isinstance(sub, kind)]
        if names:
            return names[-1]
    raise ValueError("Could not find the final classification layer of the backbone; pass layer.")


def _resolve_preprocess(preprocess, weights_entry, torch_backbone):
    """Return ``(input mode, preprocessing callable or None)``.

    Modes: "as_is" (batches untouched), "decode" (images to float, uint8 scaled),
    "per_sample" (a user callable, one sample at a time) and "transforms"
    (torchvision's weights transforms, which also take whole batches).
    """
    if callable(preprocess):
        return "per_sample", preprocess
    if preprocess is None or not torch_backbone:
        return "as_is", None
    if weights_entry is not None:
        return "transforms", weights_entry.transforms()
    return "decode", None


# -- inputs -----------------------------------------------------------------


def _is_str(value, text):
    return isinstance(value, str) and value == text


def _is_sequence(X):
    """A list or tuple, or a 1-D array of strings or objects (paths, images, texts)."""
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "OUS"
    return isinstance(X, (list, tuple))


def _is_image_item(item):
    if isinstance(item, (str, os.PathLike)):
        return True
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return type(item).__module__.startswith("PIL.")


def _ndim(X):
    ndim = getattr(X, "ndim", None)
    return np.asarray(X).ndim if ndim is None else ndim


def _file_key(path):
    stat = os.stat(path)
    return os.fspath(path), stat.st_mtime_ns, stat.st_size


def _decode_array(chunk):
    """A numpy batch -> a (B, C, H, W) tensor (or (B, D) rows); dtype kept."""
    batch = torch.tensor(chunk)
    if batch.ndim == 3:
        return batch.unsqueeze(1).expand(-1, 3, -1, -1)
    if batch.ndim == 4 and batch.dtype == torch.uint8:
        return batch.permute(0, 3, 1, 2)
    return batch


def _decode_sample(item):
    """A file path, PIL image or (H, W[, C]) array -> a (C, H, W) tensor."""
    if isinstance(item, (str, os.PathLike)):
        from PIL import Image

        with Image.open(item) as image:
            item = np.asarray(image.convert("RGB"))
    elif not isinstance(item, np.ndarray):
        item = np.asarray(item.convert("RGB"))
    sample = torch.tensor(item)
    return sample.expand(3, -1, -1) if sample.ndim == 2 else sample.permute(2, 0, 1)


def _stack(samples):
    if isinstance(samples, torch.Tensor):
        return samples
    shapes = {tuple(sample.shape) for sample in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"The images have different sizes {sorted(shapes)[:3]}...; pass a preprocess "
            "that resizes them to one size."
        )
    return torch.stack(samples)


# -- outputs ----------------------------------------------------------------


# The capture running in each thread. A hook on the shared module fires for
# every thread's forward pass, and is pickled with the module by whoever
# serialises it mid-pass (a dask worker sending the transformer to another):
# each hook acts only for the call that registered it.
_current_capture = threading.local()


class _Capture:
    """Forward (pre-)hook that records the layer's output (or input) and stops the pass."""

    def __init__(self, capture_input):
        self.capture_input = capture_input
        self.value = None

    def __call__(self, module, args, output=None):
        if getattr(_current_capture, "hook", None) is not self:
            return None  # another thread's capture, or a pickled copy of one
        self.value = args[0] if self.capture_input else output
        raise _LayerCaptured


def _run_to_layer(call, batch, target, capture_input):
    """Run ``call(batch)`` until ``target`` runs; return its output (or input)."""
    capture = _Capture(capture_input)
    if capture_input:
        handle = target.register_forward_pre_hook(capture)
    else:
        handle = target.register_forward_hook(capture)
    outer, _current_capture.hook = getattr(_current_capture, "hook", None), capture
    try:
        call(batch)
    except _LayerCaptured:
        pass
    finally:
        _current_capture.hook = outer
        handle.remove()
    return capture.value


def _as_tensor(out):
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    return out


def _pool(Z, pooling):
    if callable(pooling):
        Z = pooling(Z)
        if Z.ndim != 2:
            raise ValueError(f"pooling returned a {Z.ndim}-D tensor; it must return (N, D).")
        return Z
    if Z.ndim == 1:
        return Z[:, None]
    if Z.ndim == 2:
        return Z
    if pooling == "flatten":
        return Z.flatten(1)
    if pooling == "max":
        return Z.flatten(2).amax(2)
    return Z.flatten(2).mean(2)


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
