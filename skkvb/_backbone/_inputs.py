"""Inputs on their way to the encoder.

Validating them (numeric arrays, lists or torch Datasets of PIL images, arrays,
image paths or anything a plain callable takes, or a dict of keyword inputs
such as a tokenizer's output), choosing the preprocessing, decoding each batch
into a tensor on the CPU (:func:`prepare_batch`, which DataLoader workers may
run), moving it to the device (:func:`on_device`), and keying inputs for the
embedding cache. Image files are decoded one batch at a time, so a long list of
paths is never in memory at once; a Dataset is read by index, never past its
``len()``; of a Dataset of ``(input, label)`` pairs only the inputs are read.

Images: integer and bool arrays become ``uint8`` (values checked to lie in
``[0, 255]``; bool as 0/255); their channels are last ``(H, W, C)`` unless the
first axis alone looks like one (1, 3 or 4 long); one channel is repeated to
three and a fourth (alpha) dropped. 4-D float arrays are the encoder's input
``(N, C, H, W)`` and keep their channels.
"""

import itertools
import os
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_array, validate_data

__all__ = [
    "Keywords",
    "inputs_key",
    "on_device",
    "prepare_batch",
    "resolve_preprocess",
    "validate_inputs",
]

# Channel counts of an image: gray, RGB, RGBA. Only these mark an axis as the
# channel axis, so that a channels-first layout can be told from channels-last.
_IMAGE_CHANNELS = (1, 3, 4)


def resolve_preprocess(preprocess, weights_entry, torch_backbone):
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


def validate_inputs(estimator, X, mode, reset):
    """Return ``X`` as a validated numeric array or as a list of samples.

    Only 2-D arrays have features for ``n_features_in_``: fitting on anything
    else forgets those of an earlier fit. A Dataset of images comes back as it
    is (wrapped), to be read one batch at a time; a dict as :class:`Keywords`.
    """
    if isinstance(X, Mapping) and not sp.issparse(X):  # a DOK matrix is a dict too
        _forget_features(estimator, reset)
        return Keywords.validated(X, mode)
    if _is_indexed_only(X):
        X = _Indexed(X)
    if _is_sequence(X):
        if len(X) == 0:
            raise ValueError("X is empty: at least one sample is required.")
        first = X[0]
        if isinstance(X, _Indexed) and _is_pair(first):
            X, first = X.inputs_only(), first[0]
        if mode == "as_is" or _is_image_item(first):
            return X if isinstance(X, _Indexed) else list(X)
        X = X[:] if isinstance(X, _Indexed) else X  # numeric samples: one array below
    if _ndim(X) <= 2:
        return validate_data(estimator, X, reset=reset, dtype="numeric")
    _forget_features(estimator, reset)
    X = check_array(X, allow_nd=True, dtype="numeric")
    return X if mode == "as_is" else _uint8_image(X)


def prepare_batch(chunk, mode, preprocess, torch_encoder):
    """A slice of validated inputs -> the encoder's input, on the CPU.

    A DataLoader worker may run this: it reads only its arguments.
    """
    if isinstance(chunk, Keywords):
        return chunk.tensors() if torch_encoder else chunk.columns
    if mode == "as_is":
        return _as_is_batch(chunk, torch_encoder)
    return _decode_batch(chunk, mode, preprocess)


def on_device(batch, device, module, pinned=False):
    """A prepared batch on ``device``, float tensors in ``module``'s dtype.

    A ``pinned`` batch (page-locked by the DataLoader) is copied to the GPU
    asynchronously, overlapping the previous forward pass.
    """
    if isinstance(batch, dict):
        return {name: on_device(value, device, module, pinned) for name, value in batch.items()}
    if not isinstance(batch, torch.Tensor):
        return batch
    return _in_module_dtype(batch.to(device, non_blocking=pinned), module)


def _forget_features(estimator, reset):
    if reset:
        for name in ("n_features_in_", "feature_names_in_"):
            estimator.__dict__.pop(name, None)


def _as_is_batch(chunk, torch_encoder):
    """A slice of inputs for an encoder that takes them as they are.

    For a torch encoder, a numeric array becomes a float32 tensor; otherwise,
    or for a list, the slice is unchanged.
    """
    if torch_encoder and isinstance(chunk, np.ndarray):
        return torch.tensor(chunk, dtype=torch.float32)
    return chunk


def _in_module_dtype(batch, module):
    """A float batch in the dtype of ``module``'s parameters (half, bfloat16, ...).

    A torch module computes in its own dtype and refuses float32 inputs if that
    is another; inputs of other kinds (token ids, lists) are left as they are.
    """
    dtype = _float_dtype(module) if isinstance(module, torch.nn.Module) else None
    if dtype is None or not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
        return batch
    return batch.to(dtype)


def _decode_batch(chunk, mode, preprocess):
    """A slice of validated image inputs -> a preprocessed float tensor batch."""
    if isinstance(chunk, list):
        samples = [_decode_sample(item) for item in chunk]  # their sizes may differ
        batch = _stack(samples if preprocess is None else [preprocess(s) for s in samples])
    else:
        batch = _decode_array(chunk)
        if mode == "per_sample":
            batch = torch.stack([preprocess(sample) for sample in batch])
        elif mode == "transforms":  # torchvision's presets take whole batches
            batch = preprocess(batch)
    if preprocess is None and batch.dtype == torch.uint8:
        batch = batch.float().div_(255)
    return batch.float()


def inputs_key(X, mode):
    """What identifies ``X`` in the cache: an image file by its path, time and size."""
    if isinstance(X, Keywords):  # numpy: a tensor's pickle, hence its hash, varies
        return {name: _numpy(value) for name, value in X.columns.items()}
    if not isinstance(X, list) or mode == "as_is":
        return X
    return [_file_key(item) if isinstance(item, (str, os.PathLike)) else item for item in X]


def _numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _is_sequence(X):
    """A list, tuple or Dataset, or a 1-D array of strings or objects (paths, images, texts)."""
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "OUS"
    return isinstance(X, (list, tuple, _Indexed))


def _is_indexed_only(X):
    """A torch Dataset, or any other object only indexed, never iterated.

    ``np.asarray`` and ``list`` iterate such an object by indexing until an
    IndexError, which a Dataset need not ever raise: ``len()`` is its contract.
    """
    kind = type(X)
    if isinstance(X, torch.utils.data.Dataset):
        # an iterable-style one has no indexing, and no end known before the last item
        if isinstance(X, torch.utils.data.IterableDataset) or not hasattr(kind, "__len__"):
            raise TypeError(
                f"X is a {kind.__name__}, not a map-style Dataset with __len__ and "
                "__getitem__; pass such a Dataset, a list or an array."
            )
        return True
    # numpy converts an object with __array__ through it, and one with __iter__ by it
    converted = hasattr(kind, "__array__") or hasattr(kind, "__iter__")
    return hasattr(kind, "__getitem__") and hasattr(kind, "__len__") and not converted


class _Indexed:
    """A Dataset seen as a sequence: items 0 to ``len - 1``, slices as lists.

    With ``first``, each item is an ``(input, label)`` pair and stands for its input.
    """

    def __init__(self, data, first=False):
        self.data, self._len, self.first = data, len(data), first

    def __len__(self):
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(self._len))]
        return self._item(range(self._len)[index])  # bounds-checked: never past len()

    def _item(self, index):
        item = self.data[index]
        return item[0] if self.first else item

    def inputs_only(self):
        return _Indexed(self.data, first=True)


def _is_pair(item):
    """An ``(input, label)`` item of a Dataset: its input an image, array or tensor.

    The rule of torchvision's datasets and of most hand-written ones; the label
    is never read.
    """
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        return False
    first = item[0]
    return isinstance(first, (np.ndarray, torch.Tensor)) or type(first).__module__.startswith(
        "PIL."
    )


class Keywords:
    """Keyword inputs of a model (a tokenizer's ``BatchEncoding``, a dict of arrays).

    Each entry holds the samples along its first axis; a slice slices them all,
    and the model is called with the slice as keyword arguments.
    """

    def __init__(self, columns):
        self.columns = columns

    @classmethod
    def validated(cls, X, mode):
        if mode in ("per_sample", "transforms"):
            raise ValueError(
                f"X is a {type(X).__name__} of keyword inputs, which reach the model as "
                "they are; a preprocessing (preprocess, or torchvision weights' "
                "transforms) cannot apply to it. Pass preprocess=None."
            )
        columns = {name: _keyword_column(name, value) for name, value in X.items()}
        if not columns:
            raise ValueError("X is an empty dict: at least one keyword input is required.")
        lengths = {name: len(value) for name, value in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"The entries of X have different numbers of samples {lengths}; each must "
                "hold one row per sample along its first axis."
            )
        if not next(iter(lengths.values())):
            raise ValueError("X is empty: at least one sample is required.")
        return cls(columns)

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise TypeError("Keywords are read in slices of samples.")
        return Keywords({name: value[index] for name, value in self.columns.items()})

    def tensors(self):
        return {name: torch.as_tensor(value) for name, value in self.columns.items()}


def _keyword_column(name, value):
    if not isinstance(name, str):
        raise ValueError(f"X has the key {name!r}; keyword inputs are named by strings.")
    if not isinstance(value, torch.Tensor):
        try:
            value = np.asarray(value)
        except ValueError:  # ragged lists
            value = np.asarray(value, dtype=object)
        if value.dtype.kind not in "biuf":
            raise ValueError(
                f"X[{name!r}] is not a numeric array (dtype {value.dtype}); sequences of "
                "different lengths must be padded, e.g. tokenizer(..., padding=True)."
            )
    if value.ndim == 0:
        raise ValueError(f"X[{name!r}] is a scalar; it must hold one row per sample.")
    return value


def _is_image_item(item):
    if isinstance(item, (str, os.PathLike)):
        return True
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return type(item).__module__.startswith("PIL.")


def _ndim(X):
    """Number of dimensions, read from the first sample of a list, never the whole list."""
    ndim = getattr(X, "ndim", None)
    if ndim is not None:
        return ndim
    if isinstance(X, (list, tuple)) and len(X) > 0:
        return 1 + np.ndim(X[0])
    return np.asarray(X).ndim


def _float_dtype(module):
    """The dtype of the module's first float parameter (or buffer), else None."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _file_key(path):
    stat = os.stat(path)
    return os.fspath(path), stat.st_mtime_ns, stat.st_size


def _decode_array(chunk):
    """A validated numpy batch -> a (B, C, H, W) tensor (or (B, D) rows); dtype kept.

    Integer images are ``uint8`` by now (:func:`_uint8_image`); float 4-D
    batches are already the encoder's ``(N, C, H, W)`` input.
    """
    batch = torch.tensor(chunk)
    if batch.ndim == 3:  # grayscale (N, H, W)
        return _rgb(batch.unsqueeze(1))
    if batch.ndim == 4 and batch.dtype == torch.uint8:
        return _rgb(_channels_first(batch))
    return batch


def _decode_sample(item):
    """A file path, PIL image or (H, W[, C]) array -> a (C, H, W) tensor."""
    if isinstance(item, (str, os.PathLike)):
        item = _read_image(item)
    elif not isinstance(item, np.ndarray):
        item = np.asarray(item.convert("RGB"))
    sample = torch.tensor(_uint8_image(item))
    batch = sample[None, None] if sample.ndim == 2 else _channels_first(sample[None])
    return _rgb(batch)[0]


def _read_image(path):
    """An image file as an RGB uint8 array; a file PIL cannot read is named."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise  # its message names the file already
    except (OSError, ValueError, SyntaxError) as exc:  # SyntaxError: some broken headers
        raise ValueError(f"Could not read the image file {os.fspath(path)!r}: {exc}") from exc


def _uint8_image(images):
    """Integer or bool images as ``uint8``, which the decoding scales by 1/255.

    Bool is 0/255, as PIL converts its 1-bit images. Values outside [0, 255]
    are not a uint8 image's (16-bit scans, labels): guessing a scale would
    silently change the embeddings, so they are refused.
    """
    if images.dtype == bool:
        return images.astype(np.uint8) * np.uint8(255)
    if images.dtype.kind not in "iu" or images.dtype == np.uint8:
        return images
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise ValueError(
            f"X holds {images.dtype} images with values in [{low}, {high}]; integer "
            "images are read like uint8 and must lie in [0, 255]. Scale them to uint8, "
            "or to floats in [0, 1]."
        )
    return images.astype(np.uint8)


def _channels_first(batch):
    """(N, H, W, C) -> (N, C, H, W); an (N, C, H, W) batch is kept.

    Channels-first only when axis 1 alone has an image's channel count: when
    both axes could be channels (a 3x3 RGB image) channels-last wins, as
    documented.
    """
    if batch.shape[1] in _IMAGE_CHANNELS and batch.shape[-1] not in _IMAGE_CHANNELS:
        return batch
    return batch.permute(0, 3, 1, 2)


def _rgb(batch):
    """An (N, C, H, W) image batch with 3 channels: gray repeated, alpha dropped."""
    if batch.shape[1] == 1:
        return batch.expand(-1, 3, -1, -1)
    if batch.shape[1] == 4:  # as PIL's convert("RGB"): alpha dropped, not composited
        return batch[:, :3]
    return batch


def _stack(samples):
    shapes = {tuple(sample.shape) for sample in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"The images have different sizes {sorted(shapes)[:3]}...; pass a preprocess "
            "that resizes them to one size."
        )
    return torch.stack(samples)
