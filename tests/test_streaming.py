"""StreamingPipeline: batches through a frozen encoder into a partial_fit.

The end-to-end tests stream sklearn's bundled digits, as 8x8 grayscale images,
through a small frozen conv encoder into a KeyValueBottleneckClassifier.
"""

import joblib
import numpy as np
import pytest
import torch
from _helpers import class_incremental, fingerprint
from sklearn import config_context
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb._backbone import FrozenBackboneTransformer
from skkvb._streaming import StreamingPipeline, make_streaming_pipeline


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    images = (X.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)  # (N, H, W) grayscale
    return train_test_split(images, y, test_size=0.3, random_state=0, stratify=y)


def frozen_conv():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())


def dkvb_pipeline():
    return make_streaming_pipeline(
        FrozenBackboneTransformer(frozen_conv(), pooling="flatten", device="cpu"),
        KeyValueBottleneckClassifier(
            codebook=KeyCodebook(n_codebooks=16, n_keys=32, key_dim=4, random_state=0),
            max_iter=10,
            device="cpu",
            random_state=0,
        ),
    )


def test_dkvb_pipeline_fits_streams_predicts_and_round_trips(digits, tmp_path):
    X_train, X_test, y_train, y_test = digits
    fitted = dkvb_pipeline().fit(X_train, y_train)
    assert fitted.score(X_test, y_test) > 0.85

    streamed = dkvb_pipeline()
    for X_phase, y_phase in class_incremental(X_train, y_train):
        assert streamed.partial_fit(X_phase, y_phase) is streamed
    np.testing.assert_array_equal(streamed.classes_, np.arange(10))
    assert streamed.score(X_test, y_test) > 0.7  # no replay, one pass, classes unseen at first

    joblib.dump(streamed, tmp_path / "pipeline.joblib")
    restored = joblib.load(tmp_path / "pipeline.joblib")
    np.testing.assert_array_equal(restored.predict_proba(X_test), streamed.predict_proba(X_test))
    for pipeline in (restored, streamed):  # the restored stream goes on like the original
        pipeline.partial_fit(X_train[:64], y_train[:64])
    np.testing.assert_array_equal(restored.predict(X_test), streamed.predict(X_test))


def test_partial_fit_equals_the_manual_loop(digits):
    X_train, X_test, y_train, _ = digits
    pipeline = dkvb_pipeline()
    embedder, classifier = clone(pipeline[0]), clone(pipeline[-1])
    for X_phase, y_phase in class_incremental(X_train, y_train, n_phases=2):
        pipeline.partial_fit(X_phase, y_phase, classes=np.arange(10))
        if not hasattr(embedder, "encoder_"):
            embedder.fit(X_phase)
        classifier.partial_fit(embedder.transform(X_phase), y_phase, classes=np.arange(10))
    np.testing.assert_array_equal(
        pipeline.predict(X_test), classifier.predict(embedder.transform(X_test))
    )


class Recorder(SGDClassifier):
    """Keeps the keyword arguments of each partial_fit call."""

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        self.calls_ = getattr(self, "calls_", []) + [(classes, sample_weight)]
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


def test_how_each_intermediate_step_streams():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(60, 6)), np.arange(60) % 3
    prefitted_pca = PCA(n_components=4).fit(rng.normal(size=(30, 6)))
    frozen_scaler = FrozenEstimator(StandardScaler().fit(X[:10] * 3))
    pipeline = StreamingPipeline(
        [
            ("scaler", StandardScaler()),  # has partial_fit: updated by every batch
            ("frozen", frozen_scaler),  # frozen: transform only
            ("skip", "passthrough"),
            ("pca", prefitted_pca),  # fitted, no partial_fit: transform only
            ("late_pca", PCA(n_components=3)),  # unfitted: fitted on the first batch
            ("clf", Recorder(random_state=0)),
        ]
    )
    components = prefitted_pca.components_.copy()
    frozen_mean = frozen_scaler.estimator.mean_.copy()
    pipeline.partial_fit(X[:30], y[:30], classes=[0, 1, 2])
    late_components = pipeline.named_steps["late_pca"].components_.copy()
    pipeline.partial_fit(X[30:], y[30:], sample_weight=np.ones(30))

    assert pipeline.named_steps["scaler"].n_samples_seen_ == 60
    np.testing.assert_array_equal(frozen_scaler.estimator.mean_, frozen_mean)
    np.testing.assert_array_equal(prefitted_pca.components_, components)
    np.testing.assert_array_equal(pipeline.named_steps["late_pca"].components_, late_components)
    (classes, no_weight), (no_classes, weight) = pipeline.named_steps["clf"].calls_
    assert (
        classes == [0, 1, 2] and no_weight is None and no_classes is None and weight.shape == (30,)
    )
    assert pipeline.predict(X).shape == (60,)


def test_partial_fit_needs_a_final_partial_fit():
    assert hasattr(make_streaming_pipeline(StandardScaler(), SGDClassifier()), "partial_fit")
    assert not hasattr(
        make_streaming_pipeline(StandardScaler(), LogisticRegression()), "partial_fit"
    )


def test_make_streaming_pipeline_names_steps():
    pipeline = make_streaming_pipeline(StandardScaler(), SGDClassifier(), verbose=True)
    assert isinstance(pipeline, StreamingPipeline) and pipeline.verbose
    assert [name for name, _ in pipeline.steps] == ["standardscaler", "sgdclassifier"]


def test_partial_fit_is_all_or_nothing_across_steps():
    """A batch the scaler accepts (it ignores NaN) but the classifier rejects
    leaves the scaler as it was."""
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(60, 4)), np.repeat([0, 1], 30)
    scaler = StandardScaler()
    pipe = make_streaming_pipeline(
        scaler,
        KeyValueBottleneckClassifier(
            codebook=KeyCodebook(n_codebooks=4, n_keys=8, key_dim=2, random_state=0),
            random_state=0,
        ),
    )
    pipe.partial_fit(X, y)
    seen, mean = scaler.n_samples_seen_.copy(), scaler.mean_.copy()
    bad = X[:5].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pipe.partial_fit(bad, y[:5])
    np.testing.assert_array_equal(scaler.n_samples_seen_, seen)
    np.testing.assert_array_equal(scaler.mean_, mean)
    pipe.partial_fit(X[:5], y[:5])  # and it keeps streaming
    assert (scaler.n_samples_seen_ == seen + 5).all()


# ------------------------------------------------------------- metadata


def weighted_stream_data():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    return X, y, rng.randint(0, 4, size=60).astype(float)


def counting_classifier():
    return KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(
            KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(
                np.random.RandomState(1).normal(size=(60, 4))
            )
        ),
        device="cpu",
    )


def manual_stream(X, y, weights, batches):
    """What the pipeline should do: scaler updated with the weights, then the classifier."""
    scaler, clf = StandardScaler(), counting_classifier()
    for batch in batches:
        scaler.partial_fit(X[batch], sample_weight=weights[batch])
        clf.partial_fit(scaler.transform(X[batch]), y[batch], sample_weight=weights[batch])
    return scaler, clf


BATCHES = [slice(0, 30), slice(30, 60)]


def test_partial_fit_routes_metadata_with_routing_enabled():
    X, y, weights = weighted_stream_data()
    scaler, clf = manual_stream(X, y, weights, BATCHES)
    with config_context(enable_metadata_routing=True):
        pipe = make_streaming_pipeline(
            StandardScaler().set_partial_fit_request(sample_weight=True),
            counting_classifier().set_partial_fit_request(sample_weight=True),
        )
        for batch in BATCHES:
            pipe.partial_fit(X[batch], y[batch], classes=[0, 1, 2], sample_weight=weights[batch])
    np.testing.assert_array_equal(pipe[0].mean_, scaler.mean_)
    np.testing.assert_array_equal(pipe[-1].class_counts_, clf.class_counts_)
    np.testing.assert_array_equal(pipe.predict_proba(X), clf.predict_proba(scaler.transform(X)))


def test_partial_fit_takes_step_parameters_without_routing():
    X, y, weights = weighted_stream_data()
    scaler, clf = manual_stream(X, y, weights, BATCHES)
    pipe = make_streaming_pipeline(StandardScaler(), counting_classifier())
    for batch in BATCHES:
        pipe.partial_fit(
            X[batch], y[batch],
            standardscaler__sample_weight=weights[batch],
            keyvaluebottleneckclassifier__sample_weight=weights[batch],
        )
    np.testing.assert_array_equal(pipe[0].mean_, scaler.mean_)
    np.testing.assert_array_equal(pipe[-1].class_counts_, clf.class_counts_)
    # A plain name goes to the final partial_fit, as it always did.
    plain = make_streaming_pipeline(StandardScaler(), counting_classifier())
    plain.partial_fit(X, y, sample_weight=weights)
    named = make_streaming_pipeline(StandardScaler(), counting_classifier())
    named.partial_fit(X, y, keyvaluebottleneckclassifier__sample_weight=weights)
    np.testing.assert_array_equal(plain[-1].class_counts_, named[-1].class_counts_)


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"nostep__sample_weight": 1}, ValueError, "got the parameter 'nostep__sample_weight'"),
        ({"standardscaler__": 1}, ValueError, "got the parameter 'standardscaler__'"),
        ({"frozen__sample_weight": 1}, ValueError, r"\['sample_weight'\] for step 'frozen'"),
        ({"keyvaluebottleneckclassifier__nope": 1}, TypeError, "nope"),
    ],
)
def test_bad_step_parameters_raise_and_change_nothing(params, error, message):
    X, y, weights = weighted_stream_data()
    pipe = StreamingPipeline(
        [
            ("standardscaler", StandardScaler()),
            ("frozen", FrozenEstimator(StandardScaler().fit(X))),
            ("keyvaluebottleneckclassifier", counting_classifier()),
        ]
    ).partial_fit(X[:30], y[:30])
    before = fingerprint(pipe)
    with pytest.raises(error, match=message):
        pipe.partial_fit(X[30:], y[30:], **params)
    assert fingerprint(pipe) == before


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"foo": 1}, TypeError, r"got unexpected argument\(s\) \{'foo'\}"),
        # sample_weight, requested by no step: scikit-learn's UnsetMetadataPassedError
        ({"sample_weight": np.ones(30)}, ValueError, r"\[sample_weight\] are passed"),
    ],
)
def test_routing_refuses_unknown_and_unrequested_metadata(params, error, message):
    X, y, _ = weighted_stream_data()
    with config_context(enable_metadata_routing=True):
        pipe = make_streaming_pipeline(StandardScaler(), counting_classifier())
        pipe.partial_fit(X[:30], y[:30])
        before = fingerprint(pipe)
        with pytest.raises(error, match=message):
            pipe.partial_fit(X[30:], y[30:], **params)
    assert fingerprint(pipe) == before

