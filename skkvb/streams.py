"""Streams of training phases for continual-learning experiments.

A *stream* cuts a labelled training set into an ordered list of *phases*. In a
class-incremental stream every phase holds the samples of a disjoint group of
classes, so a learner sees each class during one phase only and never again
(no replay). An i.i.d. stream cuts the same set into phases at random, which is
the upper reference a continual learner should match.

The splitters follow scikit-learn's cross-validation splitters: ``split(X, y)``
yields arrays of sample indices, one per phase, and ``get_n_splits`` says how
many. :func:`make_phases` turns a splitter into a list of ``(X, y)`` phases.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

from ._typing import ArrayLike, RandomStateLike

__all__ = [
    "ClassIncrementalSplit",
    "IIDSplit",
    "make_phases",
    "make_gaussian_toy",
]


def _phase_sizes(n_classes, n_phases, classes_per_phase):
    """Number of classes in each phase, from whichever of the two was given."""
    if classes_per_phase is None:
        if n_phases is None:
            raise ValueError("Give n_phases or classes_per_phase.")
        if not isinstance(n_phases, numbers.Integral) or n_phases < 1:
            raise ValueError(f"n_phases must be a positive integer, got {n_phases!r}.")
        if n_phases > n_classes:
            raise ValueError(
                f"n_phases={n_phases} is more than the {n_classes} classes in y; "
                "every phase needs at least one class."
            )
        return [len(chunk) for chunk in np.array_split(np.arange(n_classes), n_phases)]
    if isinstance(classes_per_phase, numbers.Integral):
        if classes_per_phase < 1:
            raise ValueError("classes_per_phase must be at least 1.")
        n_full, rest = divmod(n_classes, int(classes_per_phase))
        sizes = [int(classes_per_phase)] * n_full + ([rest] if rest else [])
    else:
        sizes = [int(size) for size in classes_per_phase]
        if min(sizes, default=0) < 1 or sum(sizes) != n_classes:
            raise ValueError(
                f"classes_per_phase={classes_per_phase!r} must be positive and sum to "
                f"the {n_classes} classes in y."
            )
    if n_phases is not None and n_phases != len(sizes):
        raise ValueError(
            f"n_phases={n_phases} disagrees with classes_per_phase={classes_per_phase!r}, "
            f"which makes {len(sizes)} phases of {n_classes} classes."
        )
    return sizes


class ClassIncrementalSplit:
    """Split a labelled set into class-incremental phases.

    The classes are put in an order (drawn from ``random_state`` unless
    ``class_order`` is given) and cut into consecutive groups; phase ``p``
    holds every sample whose class is in group ``p``. The groups are disjoint
    and together cover every class of ``y``.

    Parameters
    ----------
    n_phases : int or None, default=5
        Number of phases. The classes are shared out as evenly as possible,
        earlier phases taking the extra ones. Ignored when ``None`` and
        ``classes_per_phase`` is given.
    classes_per_phase : int, list of int or None, default=None
        Classes in each phase: an int gives phases of that many classes (the
        last one takes the remainder); a list gives each phase's count, for
        example ``[5, 1, 1, 1, 1, 1]`` for a large first phase.
    class_order : array-like or None, default=None
        The order in which classes arrive. ``None`` draws a random order
        from ``random_state``.
    shuffle : bool, default=True
        Shuffle the samples inside each phase.
    random_state : int, RandomState instance or None, default=None
        Draws the class order and the shuffles. An int makes ``split``
        return the same phases every time.

    See Also
    --------
    IIDSplit : The same set cut into phases at random.
    make_phases : Turn a splitter into a list of ``(X, y)`` phases.

    Examples
    --------
    >>> import numpy as np
    >>> from skkvb.streams import ClassIncrementalSplit
    >>> y = np.repeat(np.arange(6), 3)
    >>> splitter = ClassIncrementalSplit(n_phases=3, random_state=0)
    >>> [np.unique(y[idx]).tolist() for idx in splitter.split(np.zeros((18, 1)), y)]
    [[2, 5], [1, 3], [0, 4]]
    >>> splitter.phase_classes(y)
    [array([2, 5]), array([1, 3]), array([0, 4])]
    """

    def __init__(
        self,
        n_phases: int | None = 5,
        *,
        classes_per_phase: int | list[int] | None = None,
        class_order: ArrayLike | None = None,
        shuffle: bool = True,
        random_state: RandomStateLike = None,
    ) -> None:
        self.n_phases = n_phases
        self.classes_per_phase = classes_per_phase
        self.class_order = class_order
        self.shuffle = shuffle
        self.random_state = random_state

    def _ordered_classes(self, classes, rng):
        if self.class_order is None:
            return classes[rng.permutation(len(classes))]
        order = np.asarray(self.class_order)
        if len(order) != len(classes) or not np.array_equal(np.sort(order), classes):
            raise ValueError(
                f"class_order must be a permutation of the classes in y {classes.tolist()}, "
                f"got {order.tolist()}."
            )
        return order

    def _groups(self, y, rng):
        classes = np.unique(y)
        ordered = self._ordered_classes(classes, rng)
        sizes = _phase_sizes(len(classes), self.n_phases, self.classes_per_phase)
        return [np.sort(group) for group in np.split(ordered, np.cumsum(sizes)[:-1])]

    def phase_classes(self, y: ArrayLike) -> list[np.ndarray]:
        """The classes of each phase, in arrival order.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        groups : list of ndarray
            ``groups[p]`` holds the classes of phase ``p``.
        """
        y = column_or_1d(y)
        return self._groups(y, check_random_state(self.random_state))

    def split(self, X: ArrayLike, y: ArrayLike) -> Iterator[np.ndarray]:
        """Yield the sample indices of each phase.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs; only their number is used.
        y : array-like of shape (n_samples,)
            Class labels that define the phases.

        Yields
        ------
        indices : ndarray of int
            The indices of the samples of one phase.
        """
        y = column_or_1d(y)
        if X is not None and len(X) != len(y):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)}.")
        rng = check_random_state(self.random_state)
        for group in self._groups(y, rng):
            indices = np.flatnonzero(np.isin(y, group))
            if self.shuffle:
                indices = indices[rng.permutation(len(indices))]
            yield indices

    def get_n_splits(self, X: Any = None, y: ArrayLike | None = None) -> int:
        """Number of phases; needs ``y`` unless ``n_phases`` alone fixes it."""
        if self.classes_per_phase is None:
            return self.n_phases
        if y is None:
            raise ValueError("y is needed to count the phases from classes_per_phase.")
        n_classes = len(np.unique(column_or_1d(y)))
        return len(_phase_sizes(n_classes, self.n_phases, self.classes_per_phase))

    def __repr__(self):
        return (
            f"ClassIncrementalSplit(n_phases={self.n_phases!r}, classes_per_phase="
            f"{self.classes_per_phase!r}, shuffle={self.shuffle!r}, "
            f"random_state={self.random_state!r})"
        )


class IIDSplit:
    """Split a set into phases at random: every phase sees every class.

    Parameters
    ----------
    n_phases : int, default=1
        Number of phases of (nearly) equal size.
    random_state : int, RandomState instance or None, default=None
        Draws the random order of the samples.

    See Also
    --------
    ClassIncrementalSplit : Phases of disjoint classes.

    Examples
    --------
    >>> import numpy as np
    >>> from skkvb.streams import IIDSplit
    >>> [len(idx) for idx in IIDSplit(n_phases=2, random_state=0).split(np.zeros((5, 1)))]
    [3, 2]
    """

    def __init__(self, n_phases: int = 1, *, random_state: RandomStateLike = None) -> None:
        self.n_phases = n_phases
        self.random_state = random_state

    def split(self, X: ArrayLike, y: Any = None) -> Iterator[np.ndarray]:
        """Yield the sample indices of each phase.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs; only their number is used.
        y : None
            Ignored.

        Yields
        ------
        indices : ndarray of int
            The indices of the samples of one phase.
        """
        if not isinstance(self.n_phases, numbers.Integral) or self.n_phases < 1:
            raise ValueError(f"n_phases must be a positive integer, got {self.n_phases!r}.")
        if self.n_phases > len(X):
            raise ValueError(f"n_phases={self.n_phases} is more than the {len(X)} samples.")
        order = check_random_state(self.random_state).permutation(len(X))
        yield from np.array_split(order, self.n_phases)

    def get_n_splits(self, X: Any = None, y: Any = None) -> int:
        """Number of phases."""
        return self.n_phases

    def __repr__(self):
        return f"IIDSplit(n_phases={self.n_phases!r}, random_state={self.random_state!r})"


def make_phases(
    X: ArrayLike, y: ArrayLike, splitter: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut ``(X, y)`` into the list of phases that ``splitter`` defines.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Inputs.
    y : array-like of shape (n_samples,)
        Class labels.
    splitter : ClassIncrementalSplit or IIDSplit
        Any object whose ``split(X, y)`` yields index arrays.

    Returns
    -------
    phases : list of tuple of ndarray
        ``phases[p] = (X_p, y_p)``, in arrival order.

    Examples
    --------
    >>> from skkvb.streams import ClassIncrementalSplit, make_gaussian_toy, make_phases
    >>> X, y = make_gaussian_toy(random_state=0)
    >>> phases = make_phases(X, y, ClassIncrementalSplit(4, class_order=range(8)))
    >>> [sorted(set(y_p.tolist())) for _, y_p in phases]
    [[0, 1], [2, 3], [4, 5], [6, 7]]
    """
    X = np.asarray(X)
    y = column_or_1d(y)
    return [(X[idx], y[idx]) for idx in splitter.split(X, y)]


def make_gaussian_toy(
    n_samples_per_class: int = 100,
    *,
    n_classes: int = 8,
    radius: float = 0.35,
    cluster_std: float = 0.04,
    random_state: RandomStateLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D toy of the DKVB paper (Section 5.1): separated Gaussian classes.

    The class centres sit evenly on a circle of ``radius`` around (0.5, 0.5),
    class ``k`` at angle ``2 pi k / n_classes``, so that neighbouring labels
    are neighbours in the plane and the data fill the unit square. Cut into
    stages of two classes in label order (``ClassIncrementalSplit(4,
    class_order=range(8))``), a linear probe or a small MLP trained stage after
    stage forgets the earlier stages; a key-value bottleneck does not.

    Parameters
    ----------
    n_samples_per_class : int, default=100
        Samples drawn for each class.
    n_classes : int, default=8
        Number of classes.
    radius : float, default=0.35
        Distance of every class centre from the middle of the unit square.
    cluster_std : float, default=0.04
        Standard deviation of each isotropic Gaussian.
    random_state : int, RandomState instance or None, default=None
        Draws the samples.

    Returns
    -------
    X : ndarray of shape (n_classes * n_samples_per_class, 2)
        The points, float32, sorted by class.
    y : ndarray of shape (n_classes * n_samples_per_class,)
        Integer labels ``0 .. n_classes - 1``.

    References
    ----------
    .. [1] F. Träuble et al., "Discrete Key-Value Bottleneck", ICML 2023.

    Examples
    --------
    >>> from skkvb.streams import make_gaussian_toy
    >>> X, y = make_gaussian_toy(random_state=0)
    >>> X.shape, y.shape, int(y.max())
    ((800, 2), (800,), 7)
    """
    rng = check_random_state(random_state)
    angles = 2 * np.pi * np.arange(n_classes) / n_classes
    centres = 0.5 + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.repeat(np.arange(n_classes), n_samples_per_class)
    X = centres[y] + cluster_std * rng.standard_normal((len(y), 2))
    return X.astype(np.float32), y
