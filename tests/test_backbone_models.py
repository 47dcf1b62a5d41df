"""FrozenBackboneTransformer on encoders as users bring them (issue 15).

timm models by name, Hugging Face transformers models (dict outputs, token
sequences, keyword inputs), tuple outputs, autocast precision, DataLoader
workers, Datasets of (input, label) pairs and the tqdm progress bar. All
offline: tiny randomly initialised models, weights from local files only.
"""

import re
import sys

import numpy as np
import pytest
import torch
from _helpers import Returns, TinyConvNet, assert_fit_fails_untouched
from PIL import Image
from sklearn.utils._param_validation import InvalidParameterError
from torch.utils.data import Dataset

from skkvb._backbone import FrozenBackboneTransformer


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)


def as_float_batch(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def embed(backbone, X, **params):
    return FrozenBackboneTransformer(backbone, device="cpu", **params).fit_transform(X)


# -- timm by name -------------------------------------------------------------------


def test_timm_model_by_name_untrained(images):
    timm = pytest.importorskip("timm")
    embedder = FrozenBackboneTransformer("timm/resnet18", weights=None, device="cpu")
    Z = embedder.fit_transform(images)
    assert isinstance(embedder.encoder_, timm.models.ResNet) and embedder.layer_ is None
    assert Z.shape == (6, 512) and embedder.preprocess_ is None  # uint8 scaled to [0, 1]
    with torch.no_grad():
        np.testing.assert_allclose(
            Z, embedder.encoder_(as_float_batch(images)).numpy(), rtol=1e-4, atol=1e-5
        )


def test_timm_weights_file_with_its_preprocessing(tmp_path, images):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18").eval()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)  # with its classifier, as timm publishes them
    embedder = FrozenBackboneTransformer("timm/resnet18", weights=path, device="cpu")
    Z = embedder.fit_transform(images[:2])
    resize, crop = embedder.preprocess_.transforms[:2]
    assert list(resize.size) == [235] and list(crop.size) == [224, 224]  # 224 / crop_pct 0.95
    model.reset_classifier(0)
    with torch.no_grad():
        expected = model(embedder.preprocess_(torch.from_numpy(images[:2]).permute(0, 3, 1, 2)))
    np.testing.assert_allclose(Z, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_safetensors_weights_file_into_a_module(tmp_path, images):
    safetensors = pytest.importorskip("safetensors.torch")
    trained = TinyConvNet()
    with torch.no_grad():
        trained.features[0].bias.fill_(1.0)
    path = tmp_path / "model.safetensors"
    safetensors.save_file(trained.state_dict(), str(path))
    Z = embed(TinyConvNet(), images, layer="features", weights=str(path))
    np.testing.assert_allclose(Z, embed(trained, images, layer="features"), rtol=1e-6)
    path.write_bytes(b"not tensors")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        embed(TinyConvNet(), images, weights=str(path))


def test_timm_offline_names_what_to_fetch(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # fails as without network, at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    embedder = FrozenBackboneTransformer("timm/resnet18", device="cpu")
    with pytest.raises(OSError, match="offline") as error:
        embedder.fit(np.zeros((1, 32, 32, 3), np.uint8))
    assert "https://huggingface.co/timm/resnet18.a1_in1k" in str(error.value)
    assert "weights='/path/to/model.safetensors'" in str(error.value)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"backbone": "timm/resnet1800"}, "not a timm model.*Did you mean 'resnet18"),
        ({"backbone": "timm/resnet18.a9_in1k"}, "not a pretrained tag of 'resnet18'"),
        ({"backbone": "timm/resnet18", "weights": "IMAGENET1K_V1"}, "does not apply"),
        ({"backbone": "timm/resnet18", "weights": "/nowhere/w.pth"}, "not an existing file"),
    ],
)
def test_timm_bad_names_and_weights(params, message):
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=message):
        FrozenBackboneTransformer(device="cpu", **params).fit(np.zeros((1, 8, 8, 3), np.uint8))


def test_timm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ImportError, match=r'pip install "skkvb\[timm\]"'):
        FrozenBackboneTransformer("timm/resnet18", weights=None).fit(np.zeros((1, 8, 8, 3)))


# -- transformers models: dict outputs, tokens --------------------------------------


def tiny_transformer(kind, **config):
    """A randomly initialised transformers ``<kind>Model`` of width 32, two layers."""
    transformers = pytest.importorskip("transformers")
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = getattr(transformers, f"{kind}Config")(intermediate_size=64, **sizes, **config)
    torch.manual_seed(0)
    return getattr(transformers, f"{kind}Model")(config).eval()


@pytest.fixture(scope="module")
def vit():
    return tiny_transformer("ViT", image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def vit_out(vit, images):
    with torch.no_grad():
        return vit(as_float_batch(images))


def test_vit_default_output_is_its_pooler_output(vit, vit_out, images):
    Z = embed(vit, images, batch_size=4)
    np.testing.assert_allclose(Z, vit_out.pooler_output.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean", "avg", "max", "flatten"])
def test_vit_tokens_pooled(vit, vit_out, images, pooling):
    """A 3-D output is (N, T, D) tokens: pooled over T."""
    tokens = vit_out.last_hidden_state
    expected = {
        "cls": tokens[:, 0],
        "mean": tokens.mean(1),
        "avg": tokens.mean(1),
        "max": tokens.amax(1),
        "flatten": tokens.flatten(1),
    }[pooling]
    Z = embed(vit, images, output="last_hidden_state", pooling=pooling)
    np.testing.assert_allclose(Z, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_dict_outputs_by_default_key_and_index(images):
    """Defaults in their documented order; an index counts the entries not None."""
    outputs = {
        "pooler_output": lambda x: {"pooler_output": None, "last_hidden_state": x.mean((2, 3))},
        "image_embeds": lambda x: {"logits": x[:, 0, 0], "image_embeds": x[:, :, 0, 0]},
    }
    x = as_float_batch(images)
    np.testing.assert_allclose(embed(Returns(outputs["pooler_output"]), images), x.mean((2, 3)))
    np.testing.assert_allclose(embed(Returns(outputs["image_embeds"]), images), x[:, :, 0, 0])
    np.testing.assert_allclose(
        embed(Returns(outputs["image_embeds"]), images, output=0), x[:, 0, 0]
    )


@pytest.fixture(scope="module")
def bert():
    return tiny_transformer("Bert", vocab_size=100, max_position_embeddings=32)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_bert_keyword_inputs_masked_pooling_ignores_padding(bert, pooling):
    """Issue 15.4: a BatchEncoding as X, batched; padding does not change an embedding."""
    transformers = pytest.importorskip("transformers")
    sequences = [[2, 17, 45, 9, 3], [2, 8, 3], [2, 60, 61, 62, 63, 3], [2, 3], [2, 5, 6, 3]]
    width = max(map(len, sequences))
    ids = np.array([s + [0] * (width - len(s)) for s in sequences])
    batch = transformers.BatchEncoding({"input_ids": ids, "attention_mask": (ids > 0) * 1})
    embedder = FrozenBackboneTransformer(
        bert, output="last_hidden_state", pooling=pooling, batch_size=2, device="cpu"
    )
    Z = embedder.fit_transform(batch)
    assert Z.shape == (5, 32) and embedder.embedding_dim_ == 32
    for row, sequence in zip(Z, sequences):  # each alone, unpadded, as a dict of lists
        mask = [[1] * len(sequence)]
        alone = embedder.transform({"input_ids": [sequence], "attention_mask": mask})
        np.testing.assert_allclose(row, alone[0], rtol=1e-4, atol=1e-5)
    unmasked = embedder.transform({"input_ids": ids})  # no mask: padding tokens count
    assert not np.allclose(unmasked[1], Z[1], atol=1e-3)


def test_keyword_inputs_refused_clearly(bert):
    embedder = FrozenBackboneTransformer(bert, output="last_hidden_state", device="cpu")
    ids = np.array([[2, 5, 3], [2, 6, 3]])
    cases = [
        ({"input_ids": ids, "attention_mask": ids[:1]}, "different numbers of samples"),
        ({"input_ids": [[2, 5, 3], [2, 3]]}, r"X\['input_ids'\] is not a numeric array.*padded"),
        ({}, "empty dict"),
    ]
    for X, message in cases:
        with pytest.raises(ValueError, match=message):
            embedder.fit(X)
    with pytest.raises(ValueError, match="keyword inputs.*Pass preprocess=None"):
        embedder.set_params(preprocess=lambda image: image).fit({"input_ids": ids})


# -- tuples, missing keys, outputs that are no rows -----------------------------------


def test_tuple_output_by_index(images):
    pair = Returns(lambda x: (x.mean((2, 3)), x.amax((2, 3)) * 2))
    x = as_float_batch(images)
    np.testing.assert_allclose(embed(pair, images), x.mean((2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(embed(pair, images, output=1), x.amax((2, 3)).numpy() * 2)


def test_bad_outputs_are_named_and_leave_the_fit_untouched(vit, images):
    fitted = FrozenBackboneTransformer(TinyConvNet(), layer="features", device="cpu").fit(images)
    pair = Returns(lambda x: (x.mean((2, 3)), x))
    cases = [
        (
            {"backbone": vit, "layer": None, "output": "image_embeds"},
            r"output='image_embeds' is not a key of the output of the backbone, a "
            r"BaseModelOutputWithPooling with keys \['last_hidden_state', 'pooler_output'\]",
        ),
        ({"backbone": pair, "layer": None, "output": 2}, "output=2 is out of range.*tuple of 2"),
        ({"backbone": pair, "layer": None, "output": "x"}, "output='x' is a key, but"),
        ({"output": 0}, "output=0 chooses an entry of a dict or tuple.*layer='features'"),
        ({"pooling": "cls"}, r"pooling='cls' takes the first token.*\(1, 5, 15, 15\)"),
        (
            {"backbone": Returns(lambda x: {"h": (x, x)}), "layer": None, "output": "h"},
            "is a tuple of 2 tensors; expected a tensor of shape",
        ),
    ]
    for params, message in cases:
        assert_fit_fails_untouched(fitted, images, message, **params)
        fitted.set_params(backbone=TinyConvNet(), layer="features", output=None, pooling="avg")


# -- precision -----------------------------------------------------------------------


def test_bfloat16_autocast_agrees_with_float32(vit):
    """Issue 15.5: every embedding dimension correlates > 0.99 over 64 samples."""
    images = np.random.RandomState(1).randint(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    params = {"output": "last_hidden_state", "pooling": "mean", "batch_size": 32}
    Z32 = embed(vit, images, **params)
    embedder = FrozenBackboneTransformer(vit, dtype="bfloat16", device="cpu", **params)
    Z16 = embedder.fit_transform(images)
    assert Z16.dtype == np.float32 and not np.array_equal(Z16, Z32)
    correlations = [np.corrcoef(Z32[:, j], Z16[:, j])[0, 1] for j in range(Z32.shape[1])]
    assert min(correlations) > 0.99
    assert next(embedder.encoder_.parameters()).dtype == torch.float32  # autocast, no cast


def test_float32_casts_a_half_module(images):
    expected = embed(TinyConvNet(), images, layer="features")
    Z = embed(TinyConvNet().half(), images, layer="features", dtype="float32")
    np.testing.assert_allclose(Z, expected, rtol=1e-2, atol=1e-2)


def test_a_dtype_the_device_cannot_run_is_refused(images, monkeypatch):
    fitted = FrozenBackboneTransformer(TinyConvNet(), device="cpu").fit(images)

    def no_bfloat16(device_type, dtype):
        raise RuntimeError("Current CUDA Device does not support bfloat16.")

    monkeypatch.setattr(torch, "autocast", no_bfloat16)
    message = "dtype='bfloat16' cannot run on device cpu: Current CUDA Device"
    assert_fit_fails_untouched(fitted, images, message, dtype="bfloat16")


# -- DataLoader workers, Datasets of pairs, unreadable files --------------------------


class Labelled(Dataset):
    """(image, label) items, as torchvision's datasets return them."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return Image.fromarray(self.images[index]), index % 3


def test_workers_give_the_same_embeddings_from_pairs_and_files(images, tmp_path):
    paths = [str(tmp_path / f"{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    expected = embed(TinyConvNet(), images, layer="features", batch_size=4)
    for X in (paths, Labelled(images)):
        Z0, Z2 = (
            embed(TinyConvNet(), X, layer="features", batch_size=4, num_workers=num_workers)
            for num_workers in (0, 2)
        )
        np.testing.assert_array_equal(Z2, Z0)
        # an (N, H, W, C) array reaches the convolution in another memory layout
        np.testing.assert_allclose(Z0, expected, rtol=1e-5, atol=1e-6)


def test_unreadable_file_is_named_and_nothing_is_cached(images, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(images[0]).save(good)
    bad.write_bytes(b"not an image")
    cache = tmp_path / "cache"
    embedder = FrozenBackboneTransformer(
        TinyConvNet(), layer="features", batch_size=1, memory=cache, device="cpu"
    ).fit([good])
    message = re.escape(f"Could not read the image file '{bad}'")
    for num_workers in (0, 2):
        with pytest.raises(ValueError, match=message):
            embedder.set_params(num_workers=num_workers).transform([good, bad])
    assert not list(cache.rglob("output.pkl"))  # joblib writes a result only on success
    Image.fromarray(images[1]).save(bad)
    np.testing.assert_allclose(
        embedder.transform([good, bad]), embedder.transform(images[:2]), rtol=1e-6
    )
    assert len(list(cache.rglob("output.pkl"))) == 2  # the two calls just made


# -- progress, parameters -----------------------------------------------------------


@pytest.mark.parametrize("verbose, n_lines", [(0, 0), (1, 2), (2, 4)])
def test_tqdm_progress_on_and_off(images, capsys, verbose, n_lines):
    """Captured stderr is no terminal: lines at the start, every 30 s (verbose=1)
    or every batch (2), and the final count once."""
    embed(TinyConvNet(), images, batch_size=2, verbose=verbose)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == n_lines
    if verbose:
        assert lines[0].startswith("FrozenBackboneTransformer:") and "| 6/6 [" in lines[-1]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"output": 1.5}, "'output' parameter"),
        ({"output": -1}, "'output' parameter"),
        ({"pooling": "median"}, "'pooling' parameter .* must be a str among"),
        ({"dtype": "int8"}, "'dtype' parameter .* must be a str among"),
        ({"num_workers": -1}, r"'num_workers' parameter .* range \[0, inf\)"),
        ({"num_workers": True}, "'num_workers' parameter"),
        ({"pin_memory": "yes"}, "'pin_memory' parameter"),
    ],
)
def test_new_parameters_are_validated(images, params, message):
    with pytest.raises(InvalidParameterError, match=message):
        FrozenBackboneTransformer(TinyConvNet(), device="cpu", **params).fit(images)
