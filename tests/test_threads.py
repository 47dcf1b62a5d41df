"""``n_jobs``: the torch threads each call runs on, torch's setting put back
after every call (also one that raises), and the data-sized ``n_keys="auto"``."""

import joblib
import numpy as np
import pytest
import torch
from _helpers import X_IRIS, Y_IRIS, tiny_codebook
from sklearn.utils._param_validation import InvalidParameterError
from threadpoolctl import threadpool_limits

import skkvb.engine.codes
from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb._key_codebook import AUTO_MAX_KEYS, auto_n_keys

# torch's setting in the calling thread during these tests: neither the
# default count (1) nor an n_jobs under test, so a leak would show.
OUTER = 3


@pytest.fixture(autouse=True)
def outer_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(OUTER)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def searches(monkeypatch):
    """The thread count of every nearest-key search; ``searches.fail = True``
    makes the next search raise."""
    seen = []
    split = skkvb.engine.codes.split_over_threads

    def spy(work, n_items, n_threads=None):
        seen.append(n_threads)
        if getattr(spy, "fail", False):
            raise RuntimeError("search failed")
        split(work, n_items, n_threads)

    monkeypatch.setattr(skkvb.engine.codes, "split_over_threads", spy)
    spy.seen = seen
    return spy


def classifier(**params):
    return KeyValueBottleneckClassifier(codebook=tiny_codebook(), random_state=0, **params)


CALLS = {
    "codebook.fit": (lambda n_jobs: tiny_codebook(n_jobs=n_jobs), lambda est: est.fit(X_IRIS)),
    "codebook.partial_fit": (
        lambda n_jobs: tiny_codebook(n_jobs=n_jobs), lambda est: est.partial_fit(X_IRIS)
    ),
    "codebook.transform": (
        lambda n_jobs: tiny_codebook().fit(X_IRIS).set_params(n_jobs=n_jobs),
        lambda est: est.transform(X_IRIS),
    ),
    "classifier.fit": (
        lambda n_jobs: classifier(n_jobs=n_jobs), lambda est: est.fit(X_IRIS, Y_IRIS)
    ),
    "classifier.partial_fit": (
        lambda n_jobs: classifier(n_jobs=n_jobs).partial_fit(X_IRIS[:60], Y_IRIS[:60]),
        lambda est: est.partial_fit(X_IRIS[60:], Y_IRIS[60:]),
    ),
    "classifier.predict": (
        lambda n_jobs: classifier().fit(X_IRIS, Y_IRIS).set_params(n_jobs=n_jobs),
        lambda est: est.predict(X_IRIS),
    ),
    "classifier.predict_proba": (
        lambda n_jobs: classifier().fit(X_IRIS, Y_IRIS).set_params(n_jobs=n_jobs),
        lambda est: est.predict_proba(X_IRIS),
    ),
}


@pytest.mark.parametrize("n_jobs, expected", [(None, 1), (1, 1), (2, 2), (-1, joblib.cpu_count())])
@pytest.mark.parametrize("name", list(CALLS))
def test_calls_search_on_n_jobs_threads_and_restore_torch(name, n_jobs, expected, searches):
    make, call = CALLS[name]
    estimator = make(n_jobs)
    searches.seen.clear()
    call(estimator)
    assert searches.seen and set(searches.seen) == {expected}
    assert torch.get_num_threads() == OUTER


@pytest.mark.parametrize("name", list(CALLS))
def test_calls_that_raise_restore_torch_threads(name, searches):
    make, call = CALLS[name]
    estimator = make(2)
    searches.fail = True
    with pytest.raises(RuntimeError, match="search failed"):
        call(estimator)
    assert searches.seen[-1] == 2
    assert torch.get_num_threads() == OUTER


@pytest.mark.parametrize("n_jobs", [0, 1.5, "2", True])
def test_invalid_n_jobs_is_named_and_leaves_torch_alone(n_jobs):
    with pytest.raises(InvalidParameterError, match="'n_jobs' parameter"):
        tiny_codebook(n_jobs=n_jobs).fit(X_IRIS)
    with pytest.raises(InvalidParameterError, match="'n_jobs' parameter"):
        classifier(n_jobs=n_jobs).fit(X_IRIS, Y_IRIS)
    fitted = classifier().fit(X_IRIS, Y_IRIS)
    before = fitted.predict_proba(X_IRIS)
    with pytest.raises(InvalidParameterError, match="'n_jobs' parameter"):
        fitted.set_params(n_jobs=n_jobs).predict(X_IRIS)
    np.testing.assert_array_equal(fitted.set_params(n_jobs=None).predict_proba(X_IRIS), before)
    assert torch.get_num_threads() == OUTER


def test_none_follows_joblib_parallel_config_within_outer_limits(searches):
    codebook = tiny_codebook()
    with joblib.parallel_config(n_jobs=2):
        codebook.fit(X_IRIS)
        assert set(searches.seen) == {2}
        searches.seen.clear()
        with threadpool_limits(limits=1, user_api="openmp"):  # torch's OpenMP pool
            codebook.transform(X_IRIS)
    assert set(searches.seen) == {1}
    assert torch.get_num_threads() == OUTER


def test_a_codebook_with_n_jobs_none_uses_its_classifiers_threads(searches):
    classifier(n_jobs=2).fit(X_IRIS, Y_IRIS)  # the codebook is fitted inside
    assert set(searches.seen) == {2}
    searches.seen.clear()
    KeyValueBottleneckClassifier(n_jobs=2, random_state=0).fit(X_IRIS[:20], Y_IRIS[:20])
    assert set(searches.seen) == {2}


def test_n_jobs_gives_the_same_codes_and_values():
    one = classifier(n_jobs=1).fit(X_IRIS, Y_IRIS)
    two = classifier(n_jobs=2).fit(X_IRIS, Y_IRIS)
    np.testing.assert_array_equal(one.codebook_.keys_, two.codebook_.keys_)
    np.testing.assert_array_equal(one.predict_proba(X_IRIS), two.predict_proba(X_IRIS))


# ---------------------------------------------------------- n_keys="auto"


def test_auto_n_keys_is_one_per_fitting_sample_at_most_the_papers():
    codebook = KeyCodebook(n_codebooks=2, key_dim=2, max_iter=1, random_state=0).fit(X_IRIS[:40])
    assert codebook.n_keys_ == 40 and codebook.keys_.shape == (2, 40, 2)
    assert codebook.key_counts_.shape == (2, 40)
    assert auto_n_keys(40, stream=False) == 40
    assert auto_n_keys(10**6, stream=False) == AUTO_MAX_KEYS == 4096


def test_auto_n_keys_of_a_stream_is_not_bounded_by_its_first_batch():
    codebook = KeyCodebook(n_codebooks=2, key_dim=2, random_state=0).partial_fit(X_IRIS[:40])
    assert codebook.n_keys_ == AUTO_MAX_KEYS and codebook.keys_.shape == (2, AUTO_MAX_KEYS, 2)
    codebook.partial_fit(X_IRIS[40:])  # later calls keep the keys they have
    assert codebook.n_keys_ == AUTO_MAX_KEYS


def test_an_integer_n_keys_is_used_as_given():
    codebook = KeyCodebook(n_codebooks=2, n_keys=64, key_dim=2, random_state=0).fit(X_IRIS[:10])
    assert codebook.n_keys_ == 64 and codebook.keys_.shape[1] == 64


def test_the_default_classifier_sizes_its_keys_to_the_training_data():
    clf = KeyValueBottleneckClassifier(random_state=0).fit(X_IRIS, Y_IRIS)
    assert clf.codebook_.n_keys_ == len(X_IRIS)
    assert clf.key_usage_.shape == (64, len(X_IRIS))
