"""Scaling out: dask arrays, dask-ml's wrappers, and joblib's dask and loky backends.

A ``LocalCluster`` of two worker processes (one thread each) on 127.0.0.1 runs
the dask tests. Needs the ``dask`` extra (part of the ``test`` extra); skipped
only when dask is not installed.
"""

import logging
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from joblib import Parallel, cpu_count, delayed, parallel_backend
from joblib.externals.loky.backend.context import get_context
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

from skkvb import FrozenBackboneTransformer, KeyCodebook, KeyValueBottleneckClassifier

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")
cloudpickle = pytest.importorskip("cloudpickle")  # what dask serialises functions with

# Past this, the cluster is closed: a hung computation then fails its test
# instead of blocking the run.
CLUSTER_DEADLINE_S = 180


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster, timeout="60s")
    watchdog = threading.Timer(CLUSTER_DEADLINE_S, client.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield client
    finally:
        watchdog.cancel()
        client.close()
        cluster.close()


def small_cnn():
    """A tiny untrained image encoder: (N, 3, H, W) -> (N, 8)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )


def test_dask_workers_run_torch_on_one_thread(client):
    # distributed's nanny sets OMP_NUM_THREADS=1 before it spawns a worker.
    assert set(client.run(torch.get_num_threads).values()) == {1}


def test_codebook_transform_of_a_dask_array_is_lazy_and_matches_numpy(client, digits_split):
    X = digits_split[0]
    codebook = KeyCodebook(n_codebooks=16, n_keys=32, key_dim=4, random_state=0).fit(X)
    X_dask = da.from_array(X, chunks=(300, 32))  # column chunks are merged
    codes = codebook.transform(X_dask)
    assert isinstance(codes, da.Array)
    assert codes.shape == (X.shape[0], 16) and codes.dtype == np.int64
    assert codes.chunks == (X_dask.chunks[0], (16,))
    expected = codebook.transform(X)
    np.testing.assert_array_equal(client.compute(codes).result(), expected)
    # dask-ml's wrapper gives the same codes; it cannot know the output width
    # before computing (it reports the input's), hence the native support.
    wrapped = dask_ml_wrappers.ParallelPostFit(codebook).transform(X_dask)
    np.testing.assert_array_equal(wrapped.compute(), expected)


def test_codebook_transform_of_a_dask_array_checks_features():
    codebook = KeyCodebook(n_codebooks=2, n_keys=4, key_dim=2, random_state=0)
    codebook.fit(np.random.RandomState(0).normal(size=(20, 6)))
    with pytest.raises(ValueError, match="X has 5 features"):
        codebook.transform(da.zeros((10, 5), chunks=5))


def test_backbone_transform_of_a_dask_array_is_lazy_and_matches_numpy(client):
    images = np.random.RandomState(0).randint(0, 256, (50, 12, 12, 3), dtype=np.uint8)
    images_dask = da.from_array(images, chunks=(16, 12, 6, 3))
    encoder = FrozenBackboneTransformer(small_cnn(), device="cpu")
    Z = encoder.fit_transform(images_dask)  # fit reads one sample
    assert isinstance(Z, da.Array)
    assert Z.shape == (50, 8) and Z.dtype == np.float32
    assert Z.chunks == (images_dask.chunks[0], (8,))
    # Workers run torch on one thread, this process on several: float32 sums may round apart.
    np.testing.assert_allclose(
        client.compute(Z).result(), encoder.transform(images), rtol=1e-5, atol=1e-6
    )


def test_backbone_transform_of_a_dask_array_of_image_paths(client, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images = np.random.RandomState(0).randint(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    paths = [str(tmp_path / f"{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    encoder = FrozenBackboneTransformer(small_cnn(), device="cpu")
    Z = encoder.fit_transform(da.from_array(np.array(paths), chunks=4))  # read by the workers
    assert Z.shape == (6, 8) and Z.chunks == ((4, 2), (8,))
    # Workers run torch on one thread, this process on several: float32 sums may round apart.
    np.testing.assert_allclose(
        client.compute(Z).result(), encoder.transform(images), rtol=1e-5, atol=1e-6
    )


def test_backbone_layer_capture_on_the_threaded_scheduler():
    # Threads share one transformer: each must capture its own forward pass.
    images = np.random.RandomState(0).randint(0, 256, (64, 12, 12, 3), dtype=np.uint8)
    encoder = FrozenBackboneTransformer(small_cnn(), layer="1", batch_size=4, device="cpu")
    encoder.fit(images)
    lazy = encoder.transform(da.from_array(images, chunks=(4, -1, -1, -1)))
    with dask.config.set(scheduler="threads", num_workers=4):
        np.testing.assert_array_equal(lazy.compute(), encoder.transform(images))


SNAPSHOT = {}


class PicklesTheTransformer(torch.nn.Module):
    """An identity layer that pickles ``SNAPSHOT["transformer"]`` as it runs,
    as dask does when a worker sends the transformer to another worker while
    its own thread is running it (with the capture hook in place)."""

    def forward(self, x):
        if "transformer" in SNAPSHOT:
            SNAPSHOT["pickle"] = cloudpickle.dumps(SNAPSHOT.pop("transformer"))
        return x


def test_backbone_pickled_in_the_middle_of_a_forward_pass_still_works():
    images = np.random.RandomState(0).randint(0, 256, (8, 12, 12, 3), dtype=np.uint8)
    cnn = small_cnn()
    cnn.insert(1, PicklesTheTransformer())
    encoder = FrozenBackboneTransformer(cnn, layer="2", device="cpu").fit(images)
    expected = encoder.transform(images)
    SNAPSHOT["transformer"] = encoder
    encoder.transform(images[:1])
    copy = pickle.loads(SNAPSHOT.pop("pickle"))
    np.testing.assert_array_equal(copy.transform(images), expected)
    np.testing.assert_array_equal(encoder.transform(images), expected)


def test_incremental_equals_in_memory_partial_fit_over_the_same_blocks(client, digits_split):
    X_train, X_test, y_train, y_test = digits_split
    # Class-incremental blocks: two new classes per block, in order.
    order = np.argsort(y_train // 2, kind="stable")
    X_stream, y_stream = X_train[order], y_train[order]
    block_sizes = tuple(np.bincount(y_stream // 2).tolist())
    codebook = KeyCodebook(n_codebooks=32, n_keys=64, key_dim=6, random_state=0)
    codebook.fit(X_train[np.random.RandomState(0).permutation(len(X_train))[:500]])
    clf = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), value_update="sgd", partial_fit_max_iter=5, random_state=0
    )

    incremental = dask_ml_wrappers.Incremental(clf, shuffle_blocks=False)
    with distributed.get_task_stream(client) as tasks:
        incremental.fit(
            da.from_array(X_stream, chunks=(block_sizes, -1)),
            da.from_array(y_stream, chunks=(block_sizes,)),
        )
    fitted_blocks = {task["key"] for task in tasks.data if str(task["key"]).startswith("('fit-")}
    assert len(fitted_blocks) >= len(block_sizes)  # partial_fit ran on the workers

    in_memory = clone(clf)
    start = 0
    for size in block_sizes:
        in_memory.partial_fit(X_stream[start : start + size], y_stream[start : start + size])
        start += size
    expected = in_memory.predict(X_test)
    np.testing.assert_array_equal(incremental.estimator_.values_, in_memory.values_)
    np.testing.assert_array_equal(incremental.predict(X_test), expected)
    lazy = incremental.predict(da.from_array(X_test, chunks=200))
    np.testing.assert_array_equal(lazy.compute(), expected)
    assert incremental.score(X_test, y_test) == in_memory.score(X_test, y_test) > 0.9


# -- hyperparameter search --------------------------------------------------

PARAM_GRID = {"codebook__n_keys": [16, 64], "learning_rate": ["auto", 4.0]}


def grid_search(n_jobs=None):
    X, y = load_digits(return_X_y=True)
    clf = KeyValueBottleneckClassifier(
        codebook=KeyCodebook(n_codebooks=16, n_keys=32, key_dim=4, max_iter=2),
        value_update="sgd",
        max_iter=5,
        random_state=0,
    )
    return GridSearchCV(clf, PARAM_GRID, cv=3, n_jobs=n_jobs).fit(X[:900] / 16, y[:900])


@pytest.fixture(scope="module")
def sequential_search():
    return grid_search(n_jobs=1)


def assert_same_search(search, reference):
    assert search.best_params_ == reference.best_params_
    for key in ["mean_test_score", *(f"split{i}_test_score" for i in range(3))]:
        np.testing.assert_array_equal(search.cv_results_[key], reference.cv_results_[key])


def test_grid_search_on_the_dask_backend_matches_sequential(client, sequential_search):
    with parallel_backend("dask"), distributed.get_task_stream(client) as tasks:
        search = grid_search()
    assert tasks.data  # the fits ran on the workers
    assert_same_search(search, sequential_search)


def test_grid_search_on_loky_matches_sequential(sequential_search):
    assert_same_search(grid_search(n_jobs=2), sequential_search)


def test_loky_workers_are_spawned_with_torch_threads_limited():
    # Not a plain fork (CUDA cannot be used in a forked child): loky execs a new interpreter.
    assert get_context().get_start_method() in ("loky", "spawn", "forkserver")
    # joblib sets OMP_NUM_THREADS = cpu_count // n_jobs for its workers unless
    # the parent sets it; torch reads it at start-up.
    expected = int(os.environ.get("OMP_NUM_THREADS", max(cpu_count() // 2, 1)))
    threads = Parallel(n_jobs=2)(delayed(torch.get_num_threads)() for _ in range(4))
    assert set(threads) == {expected}


def test_importing_and_fitting_on_cpu_leaves_cuda_uninitialised():
    code = (
        "import numpy as np, torch, skkvb\n"
        "X = np.random.RandomState(0).normal(size=(40, 4))\n"
        "skkvb.KeyCodebook(n_codebooks=2, n_keys=4, key_dim=2, device='cpu').fit(X)\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------- skkvb.dask.fit: counting values, block by block


def counting_classifier(X, **params):
    keys = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X[:200])
    return KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys), **params)


def assert_same_fit(fitted, reference, X):
    for name in ("classes_", "class_counts_", "key_usage_", "class_count_", "n_features_in_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(reference, name))
    np.testing.assert_array_equal(fitted._calibration.ids, reference._calibration.ids)
    np.testing.assert_array_equal(fitted.predict_proba(X), reference.predict_proba(X))
    # Float64 sums of distances, added block by block: equal up to rounding.
    np.testing.assert_allclose(fitted.score_samples(X), reference.score_samples(X), rtol=1e-12)


def test_dask_fit_equals_the_in_memory_fit_bit_for_bit(client, digits_split):
    import skkvb.dask

    X, _, y, _ = digits_split
    weights = np.random.RandomState(0).randint(0, 4, size=len(y)).astype(float)
    reference = counting_classifier(X).fit(X, y, sample_weight=weights)
    X_dask = da.from_array(X, chunks=(150, 32))
    fitted = skkvb.dask.fit(
        counting_classifier(X), X_dask, da.from_array(y, chunks=400), weights
    )
    assert_same_fit(fitted, reference, X)
    np.testing.assert_array_equal(
        skkvb.dask.predict(fitted, X_dask).compute(), reference.predict(X)
    )
    np.testing.assert_array_equal(
        skkvb.dask.predict_proba(fitted, X_dask).compute(), reference.predict_proba(X)
    )


def test_dask_fit_grows_the_label_set_from_blocks_with_their_own_labels(digits_split):
    import skkvb.dask

    X, _, y, _ = digits_split
    order = np.argsort(y, kind="stable")  # each block holds one or two classes
    X, y = X[order], y[order].astype(str)
    reference = counting_classifier(X).fit(X, y)
    with dask.config.set(scheduler="threads"):
        fitted = skkvb.dask.fit(
            counting_classifier(X), da.from_array(X, chunks=97), da.from_array(y, chunks=97)
        )
    assert_same_fit(fitted, reference, X)


def test_merged_calibration_samples_equal_one_sample_of_both_batches(digits_codebook, digits_split):
    from skkvb._calibration import CalibrationSample

    X, _, y, _ = digits_split
    codes = digits_codebook.transform(X)
    n_codebooks, n_keys = digits_codebook.estimator.keys_.shape[:2]
    whole = CalibrationSample(n_codebooks, n_keys, cap=40).add(X, y, codes)
    parts = [
        CalibrationSample(n_codebooks, n_keys, cap=40).add(X[rows], y[rows], codes[rows])
        for rows in (slice(0, 100), slice(100, None))
    ]
    merged = parts[0].merged_with(parts[1])
    assert merged.level == whole.level > parts[0].level
    for a, b in zip(merged._columns(), whole._columns()):
        np.testing.assert_array_equal(a, b)


def fitted_state(clf):
    return {name: np.copy(getattr(clf, name)) for name in ("classes_", "class_counts_")}


def test_dask_fit_rejects_blocks_of_other_feature_counts_and_leaves_the_model(digits_split):
    import skkvb.dask

    X, _, y, _ = digits_split
    clf = counting_classifier(X).fit(X[:300], y[:300])
    before = fitted_state(clf)
    blocks = [
        da.from_delayed(dask.delayed(block), shape=(100, 64), dtype=X.dtype)
        for block in (X[:100], X[100:200, :60], X[200:300])
    ]
    features = pytest.raises(ValueError, match="Block 1 of X has 60 features")
    with dask.config.set(scheduler="threads"), features:
        skkvb.dask.fit(clf, da.concatenate(blocks), da.from_array(y[:300], chunks=100))
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(clf, name), value)


def test_a_block_failing_on_a_worker_leaves_the_model_as_it_was(client, digits_split):
    import skkvb.dask

    X, _, y, _ = digits_split
    clf = counting_classifier(X).fit(X[:300], y[:300])
    before, names = fitted_state(clf), set(vars(clf))

    def fail_on_the_third_block(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("worker lost its block")
        return block

    X_failing = da.from_array(X, chunks=(100, 64)).map_blocks(
        fail_on_the_third_block, dtype=X.dtype
    )
    with pytest.raises(RuntimeError, match="worker lost its block"):
        skkvb.dask.fit(clf, X_failing, da.from_array(y, chunks=100))
    assert set(vars(clf)) == names
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(clf, name), value)


def test_dask_fit_refuses_sgd_values_and_unfitted_codebooks(digits_split):
    import skkvb.dask

    X, _, y, _ = digits_split
    X_dask, y_dask = da.from_array(X, chunks=200), da.from_array(y, chunks=200)
    with pytest.raises(ValueError, match="needs value_update='count'"):
        skkvb.dask.fit(counting_classifier(X, value_update="sgd"), X_dask, y_dask)
    unfitted = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)
    for codebook in (None, unfitted):
        with pytest.raises(ValueError, match="fit the keys first, e.g. on a sample"):
            skkvb.dask.fit(KeyValueBottleneckClassifier(codebook=codebook), X_dask, y_dask)
    with pytest.raises(ValueError, match="2-d dask.array.Array"):
        skkvb.dask.fit(counting_classifier(X), X, y)
