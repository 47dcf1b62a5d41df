"""FrozenBackboneTransformer on inputs and encoders outside the happy path.

Issue 17, cases 7 (Datasets read by index, never past their ``len()``) and 8
(image dtypes and layouts, half-precision encoders, outputs that are not a
tensor). Every input either gives the embeddings of its plain uint8 NHWC
equivalent, or a ValueError of the library's own that names what was expected.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from _helpers import Returns, TinyConvNet, assert_fit_fails_untouched
from torch.utils.data import Dataset, IterableDataset

from skkvb._backbone import FrozenBackboneTransformer


class ModelOutput(OrderedDict):
    """Like transformers' ModelOutput: an OrderedDict of tensors."""


class EndlessDataset(Dataset):
    """A legal Dataset whose ``__getitem__`` never raises IndexError: ``len`` is the contract.

    Indices at or past ``len`` are recorded; from ten times ``len`` on it fails
    fast, so a regression that iterates it until IndexError stops at once
    instead of filling the memory.
    """

    def __init__(self, items):
        self.items, self.read = items, []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        assert index < 10 * len(self), f"read far past len(): index {index}"
        self.read.append(index)
        return self.items[index % len(self)]


class IndexedOnly:
    """Not a torch Dataset, but like one indexed and never iterated."""

    def __init__(self, items):
        self.dataset = EndlessDataset(items)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]


@pytest.fixture
def images():
    return np.random.RandomState(0).randint(0, 256, size=(5, 12, 12, 3), dtype=np.uint8)


def embedder(**params):
    """TinyConvNet's feature maps, average-pooled; ``params`` override."""
    defaults = {"layer": "features", "device": "cpu", "batch_size": 2}
    return FrozenBackboneTransformer(TinyConvNet()).set_params(**{**defaults, **params})


def assert_same_embeddings(X, images, rtol=1e-5, **params):
    expected = embedder(**params).fit_transform(images)
    np.testing.assert_allclose(embedder(**params).fit_transform(X), expected, rtol=rtol, atol=1e-5)


# -- case 7: Datasets, by index up to len() --------------------------------------


def test_dataset_of_images_is_read_by_index_up_to_len(images):
    """Issue 17.7: a Dataset of image arrays that never raises IndexError is embedded by len."""
    data = EndlessDataset(list(images))
    fitted = embedder().fit(data)
    assert data.read == [0, 0]  # the first item, to see its kind, then the size probe
    data.read.clear()
    Z = fitted.transform(data)
    assert data.read == [0, *range(len(images))]  # its kind, then each item once
    np.testing.assert_allclose(Z, embedder().fit_transform(images), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rows", "float NCHW tensors"])
def test_dataset_of_numeric_samples_is_read_once_by_index(images, kind):
    """Issue 17.7: a Dataset of numeric samples is read by index once, never past len."""
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    X = nchw.flatten(1).numpy() if kind == "rows" else nchw.numpy()
    items = list(X) if kind == "rows" else list(nchw)
    data = EndlessDataset(items)
    backbone = nn.Linear(X.shape[1], 4) if kind == "rows" else TinyConvNet()
    params = {"backbone": backbone, "layer": "features" if kind != "rows" else None}
    np.testing.assert_allclose(
        embedder(**params).fit(data).transform(data),
        embedder(**params).fit_transform(X),
        rtol=1e-5,
        atol=1e-6,
    )
    assert max(data.read) < len(data)


def test_dataset_as_is_and_indexed_only_objects():
    """Issue 17.7: any object indexed but not iterable is read up to len, also as-is."""

    def encode(texts):
        return np.array([[len(text)] for text in texts])

    data = IndexedOnly(["a", "banana", "kiwi"])
    Z = FrozenBackboneTransformer(encode, batch_size=2, device="cpu").fit_transform(data)
    np.testing.assert_array_equal(Z, [[1], [6], [4]])
    assert max(data.dataset.read) < len(data)


def test_iterable_dataset_without_len_is_refused(images):
    """Issue 17.7: an IterableDataset (no indexing, no end known): refused, naming X."""

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(images)

    class SizedStream(Stream):
        def __len__(self):
            return len(images)

    for stream in (Stream(), SizedStream()):
        name = type(stream).__name__
        with pytest.raises(TypeError, match=f"X is a {name}, not a map-style Dataset"):
            embedder().fit(stream)


# -- case 8: image dtypes, layouts and channels -----------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.int8])
def test_integer_images_in_0_255_are_read_like_uint8(images, dtype):
    """Issue 17.8: int64 (and other integer) NHWC images in [0, 255] are read like uint8."""
    X = (images // 2).astype(dtype) if dtype == np.int8 else images.astype(dtype)
    assert_same_embeddings(X, X.astype(np.uint8))
    assert_same_embeddings(list(X), X.astype(np.uint8))
    assert_same_embeddings(X[..., 0], X[..., 0].astype(np.uint8))  # grayscale


def test_integer_images_outside_0_255_are_refused(images):
    """Issue 17.8: integer images outside [0, 255] raise, naming X, dtype and range."""
    fitted = embedder().fit(images)
    bad = images.astype(np.int64)
    bad[3, 0, 0, 0], bad[4, 0, 0, 0] = -1, 300  # not in the first sample, which fit embeds
    message = r"X holds int64 images with values in \[-1, 300\].*\[0, 255\]"
    assert_fit_fails_untouched(fitted, bad, message)
    with pytest.raises(ValueError, match=message):
        fitted.transform(bad)
    with pytest.raises(ValueError, match="X holds int64 images"):
        fitted.transform(list(bad))


def test_bool_images_are_0_and_255_like_pil_1_bit(images):
    """Issue 17.8: bool NHWC images are read as 0/255, as PIL converts its 1-bit images."""
    mask = images > 127
    assert_same_embeddings(mask, mask.astype(np.uint8) * 255)
    pil_1_bit = [Image.fromarray(m[..., 0]).convert("1") for m in mask]
    assert_same_embeddings(pil_1_bit, np.repeat(mask[..., :1], 3, -1).astype(np.uint8) * 255)


def test_uint8_nchw_is_detected_as_channels_first(images):
    """Issue 17.8: uint8 NCHW images (channel axis alone 1, 3 or 4 long) are not permuted again."""
    nchw = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    assert_same_embeddings(nchw, images)
    assert_same_embeddings(list(nchw), images)


def test_ambiguous_layout_is_channels_last():
    """Issue 17.8: when both axes could hold channels (3x3 RGB), NHWC wins, as documented."""
    rgb = np.random.RandomState(1).randint(0, 256, size=(4, 3, 3, 3), dtype=np.uint8)
    fitted = embedder(pooling="flatten").fit(rgb)
    as_nchw = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)).astype(np.float32) / 255
    np.testing.assert_allclose(fitted.transform(rgb), fitted.transform(as_nchw), atol=1e-6)


def test_rgba_images_drop_alpha(images):
    """Issue 17.8: RGBA images (NHWC, NCHW, lists, PIL) drop their alpha channel."""
    alpha = np.random.RandomState(2).randint(0, 256, size=images.shape[:3] + (1,), dtype=np.uint8)
    rgba = np.concatenate([images, alpha], axis=-1)
    assert_same_embeddings(rgba, images)
    assert_same_embeddings(np.ascontiguousarray(rgba.transpose(0, 3, 1, 2)), images)
    assert_same_embeddings(list(rgba), images)
    assert_same_embeddings([Image.fromarray(image, mode="RGBA") for image in rgba], images)


def test_one_channel_images_are_repeated_to_three(images):
    """Issue 17.8: 1-channel uint8 images (NHWC, NCHW, list) are repeated to RGB."""
    gray = images[..., :1]
    rgb = np.repeat(gray, 3, axis=-1)
    assert_same_embeddings(gray, rgb)
    assert_same_embeddings(np.ascontiguousarray(gray.transpose(0, 3, 1, 2)), rgb)
    assert_same_embeddings(list(gray), rgb)


def test_float_nchw_keeps_its_channels(images):
    """Issue 17.8: a float (N, 1, H, W) batch reaches a 1-channel encoder unchanged."""
    gray = images[:, None, :, :, 0].astype(np.float32) / 255
    conv = nn.Conv2d(1, 2, 3)
    Z = FrozenBackboneTransformer(conv, device="cpu").fit_transform(gray)
    with torch.no_grad():
        np.testing.assert_allclose(Z, conv(torch.from_numpy(gray)).mean((2, 3)), rtol=1e-5)


# -- case 8: encoder dtypes ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("preprocess", ["auto", None])
def test_module_in_another_float_dtype_gets_its_dtype(images, dtype, preprocess):
    """Issue 17.8: a half/bfloat16 (or double) module gets batches in its dtype; Z is float32."""
    X = images if preprocess == "auto" else images.transpose(0, 3, 1, 2) / np.float32(255)
    expected = embedder(preprocess=preprocess).fit_transform(X)
    Z = embedder(backbone=TinyConvNet().to(dtype), preprocess=preprocess).fit_transform(X)
    assert Z.dtype == np.float32
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-5}[dtype]
    np.testing.assert_allclose(Z, expected, rtol=tolerance, atol=tolerance)


def test_half_layer_and_bound_method(images):
    """Issue 17.8: a named layer or bound method of a half module also gets half batches."""
    net = TinyConvNet().half()
    expected = embedder(layer="features.0").fit_transform(images)
    np.testing.assert_allclose(
        embedder(backbone=net, layer="features.0").fit_transform(images), expected, atol=1e-2
    )
    assert embedder(backbone=net.embed, layer=None).fit_transform(images).dtype == np.float32


# -- case 8: outputs that are not a tensor of rows -------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: {"embedding": x.mean((2, 3))}, r"backbone is a dict with keys \['embedding'\]"),
        (
            lambda x: ModelOutput(logits=x.mean((2, 3)), hidden_states=(x,)),
            r"backbone is a ModelOutput with keys \['logits', 'hidden_states'\], none of them",
        ),
        (lambda x: x.sum(), r"backbone is a scalar \(torch.float32\)"),
        (lambda x: 3.5, r"backbone is a scalar \(torch.float64\)"),
        (lambda x: None, "backbone is a NoneType"),
        (lambda x: x.mean((0, 2, 3)), "backbone has 3 rows for a batch of 1 samples"),
    ],
    ids=["dict", "ModelOutput", "scalar tensor", "float", "None", "rows"],
)
def test_output_not_a_tensor_of_rows_is_named(images, make, message):
    """Issue 17.8: a module returning a dict/ModelOutput without a default entry
    (see test_backbone_models.py for those with one) or a scalar: a clear error naming it."""
    fitted = embedder().fit(images)
    message += r".*expected a tensor of shape \(n_samples, \.\.\.\)"
    assert_fit_fails_untouched(fitted, images, message, backbone=Returns(make), layer=None)


def test_layer_output_that_is_a_dict_is_named(images):
    """Issue 17.8: a captured layer returning a dict names the layer."""
    net = nn.Sequential(TinyConvNet(), Returns(lambda x: {"maps": x}))
    with pytest.raises(ValueError, match=r"layer='1' is a dict with keys \['maps'\]"):
        embedder(backbone=net, layer="1").fit(images)
