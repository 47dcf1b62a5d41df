"""Streams: class-incremental and i.i.d. phases, and the paper's 2-D toy."""

import numpy as np
import pytest

from skkvb.streams import ClassIncrementalSplit, IIDSplit, make_gaussian_toy, make_phases


def _labels(n_classes=10, per_class=7):
    return np.repeat(np.arange(n_classes), per_class)


@pytest.mark.parametrize(
    "params, sizes",
    [
        ({"n_phases": 5}, [2, 2, 2, 2, 2]),
        ({"n_phases": 3}, [4, 3, 3]),
        ({"n_phases": 1}, [10]),
        ({"n_phases": 10}, [1] * 10),
        ({"n_phases": None, "classes_per_phase": 4}, [4, 4, 2]),
        ({"n_phases": None, "classes_per_phase": [5, 1, 1, 1, 1, 1]}, [5, 1, 1, 1, 1, 1]),
        ({"n_phases": 2, "classes_per_phase": [3, 7]}, [3, 7]),
    ],
)
def test_phases_are_disjoint_and_cover_every_class_and_sample(params, sizes):
    y = _labels()
    splitter = ClassIncrementalSplit(**params, random_state=0)
    phases = list(splitter.split(np.zeros((len(y), 1)), y))
    assert [len(np.unique(y[idx])) for idx in phases] == sizes
    assert splitter.get_n_splits(y=y) == len(sizes)
    class_sets = [set(y[idx].tolist()) for idx in phases]
    for i, a in enumerate(class_sets):
        for b in class_sets[i + 1 :]:
            assert not a & b
    assert set().union(*class_sets) == set(range(10))
    every_index = np.concatenate(phases)
    assert np.array_equal(np.sort(every_index), np.arange(len(y)))
    assert [set(g.tolist()) for g in splitter.phase_classes(y)] == class_sets


def test_split_is_deterministic_for_a_seed_and_varies_across_seeds():
    y = _labels()
    X = np.zeros((len(y), 1))

    def run(seed):
        return [idx.tolist() for idx in ClassIncrementalSplit(5, random_state=seed).split(X, y)]

    assert run(0) == run(0)
    orders = {
        tuple(tuple(g.tolist()) for g in ClassIncrementalSplit(5, random_state=s).phase_classes(y))
        for s in range(5)
    }
    assert len(orders) > 1


def test_class_order_is_respected_and_shuffle_false_keeps_sample_order():
    y = np.array(["b", "a", "c", "a", "b", "c"])
    splitter = ClassIncrementalSplit(3, class_order=["c", "a", "b"], shuffle=False)
    assert [idx.tolist() for idx in splitter.split(None, y)] == [[2, 5], [1, 3], [0, 4]]


def test_samples_are_shuffled_within_a_phase():
    y = _labels(2, 50)
    (first,) = ClassIncrementalSplit(1, random_state=0).split(np.zeros((100, 1)), y)
    assert not np.array_equal(first, np.sort(first))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_phases": 11}, "more than the 10 classes"),
        ({"n_phases": 0}, "positive integer"),
        ({"n_phases": None}, "Give n_phases or classes_per_phase"),
        ({"n_phases": 3, "classes_per_phase": 5}, "disagrees"),
        ({"n_phases": None, "classes_per_phase": [5, 4]}, "sum to"),
        ({"n_phases": None, "classes_per_phase": 0}, "at least 1"),
        ({"n_phases": 2, "class_order": [0, 1, 2]}, "permutation"),
    ],
)
def test_invalid_configurations_raise(params, match):
    with pytest.raises(ValueError, match=match):
        ClassIncrementalSplit(**params).phase_classes(_labels())


def test_iid_split_partitions_samples_deterministically():
    X = np.zeros((23, 2))
    phases = list(IIDSplit(4, random_state=0).split(X))
    assert [len(idx) for idx in phases] == [6, 6, 6, 5]
    assert np.array_equal(np.sort(np.concatenate(phases)), np.arange(23))
    again = list(IIDSplit(4, random_state=0).split(X))
    assert all(np.array_equal(a, b) for a, b in zip(phases, again))
    with pytest.raises(ValueError, match="more than the 23 samples"):
        list(IIDSplit(24).split(X))


def test_make_phases_returns_arrays_in_arrival_order():
    X, y = make_gaussian_toy(10, random_state=0)
    phases = make_phases(X, y, ClassIncrementalSplit(4, class_order=range(8), random_state=0))
    assert [np.unique(y_p).tolist() for _, y_p in phases] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sum(len(X_p) for X_p, _ in phases) == len(X)
    for X_p, y_p in phases:
        assert X_p.shape == (len(y_p), 2)


def test_gaussian_toy_is_the_papers_setting():
    X, y = make_gaussian_toy(random_state=0)
    assert X.shape == (800, 2) and X.dtype == np.float32
    assert np.array_equal(np.bincount(y), [100] * 8)
    assert np.array_equal(X, make_gaussian_toy(random_state=0)[0])
    assert X.min() > 0 and X.max() < 1  # inside the unit square
    centres = np.stack([X[y == k].mean(0) for k in range(8)])
    nearest = np.argmin(((X[:, None] - centres) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == y) > 0.99  # separated classes
