"""Peers: the streaming classifiers a user would pick instead of DKVB.

These are the benchmark's comparison points, not part of the library's own
estimators. All learn from a stream of batches through ``partial_fit``, need
no task boundaries, and accept a label set that grows as new classes arrive
(when ``classes`` is not given to the first call).

Three keep exact running statistics, so the order of the batches does not
matter: :class:`StreamingLDA`, :class:`NearestClassMean` and
:class:`RandomReLURidgeClassifier` (RanPAC-style). Two are trained by
gradient descent on whatever batch they see last, and so forget:
:class:`SGDLinearProbe` and :class:`MLPProbe`, thin wrappers of scikit-learn's
``SGDClassifier`` and ``MLPClassifier``.
"""

import numpy as np
from scipy import linalg
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._doc_link import DocLinkMixin
from .._labels import extend_label_set, start_label_set

__all__ = [
    "StreamingLDA",
    "NearestClassMean",
    "RandomReLURidgeClassifier",
    "SGDLinearProbe",
    "MLPProbe",
]

_CHUNK = 4096  # rows per block when a (n_samples, n_components) array would be large


class _StreamingClassifier(DocLinkMixin, ClassifierMixin, BaseEstimator):
    """Validation and label bookkeeping shared by every peer.

    Subclasses implement ``_allocate(n_features, n_classes)``, ``_grow(source)``
    (make room for a larger label set; ``source[j]`` is the old row of new row
    ``j``, or -1 for a class not seen before), ``_learn(X, y_index)`` and
    ``predict``.
    """

    def fit(self, X, y):
        """Fit on one labelled set, forgetting any earlier state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        if hasattr(self, "classes_"):
            del self.classes_
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        for _ in range(self._fit_epochs()):
            self.partial_fit(X, y, classes=np.unique(y))
        return self

    def _fit_epochs(self):
        return 1

    def partial_fit(self, X, y, classes=None):
        """Learn from one batch of a stream.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The batch's inputs.
        y : array-like of shape (n_samples,)
            The batch's labels.
        classes : array-like of shape (n_classes,), default=None
            All labels the stream will hold. Given to the first call it fixes
            ``classes_`` (later calls may repeat it); left out, ``classes_``
            grows with every new label.

        Returns
        -------
        self : object
            The updated estimator.
        """
        first_call = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first_call)
        check_classification_targets(y)
        y_index = self._update_classes(y, classes, first_call, X.shape[1])
        self._learn(X, y_index)
        return self

    def _update_classes(self, y, classes, first_call, n_features):
        if first_call:
            self.classes_, self._fixed_classes = start_label_set(y, classes)
            self._allocate(n_features, len(self.classes_))
        else:
            classes_, source = extend_label_set(self.classes_, self._fixed_classes, y, classes)
            if source is not None:
                self._grow(source)
                self.classes_ = classes_
        return np.searchsorted(self.classes_, y)

    def _count(self, y_index):
        self.class_count_ += np.bincount(y_index, minlength=len(self.classes_))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class _ScoringClassifier(_StreamingClassifier):
    """A peer that predicts the class of highest score ``_scores(X)``."""

    def decision_function(self, X):
        """Class scores; for two classes, the score of ``classes_[1]`` minus ``classes_[0]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Classes never seen in training score ``-inf``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        scores = self._masked_scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict(self, X):
        """Predict the class of each input.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, from ``classes_``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.classes_[np.argmax(self._masked_scores(X), axis=1)]

    def _masked_scores(self, X):
        scores = self._scores(X)
        scores[:, self.class_count_ == 0] = -np.inf
        return scores


def _grow_rows(array, source, axis=0):
    """Rows of ``array`` moved to their new positions; new rows are zero."""
    shape = list(array.shape)
    shape[axis] = len(source)
    out = np.zeros(shape, dtype=array.dtype)
    kept = source >= 0
    index = [slice(None)] * array.ndim
    index[axis] = kept
    out[tuple(index)] = np.take(array, source[kept], axis=axis)
    return out


class StreamingLDA(_ScoringClassifier):
    """Streaming linear discriminant analysis (SLDA).

    Keeps a running mean per class and one shared within-class covariance,
    both exact for any order of batches. A class's score is the linear
    discriminant ``x' Lambda mu_k - mu_k' Lambda mu_k / 2`` with
    ``Lambda = pinv((1 - shrinkage) Sigma + shrinkage I)``.

    Parameters
    ----------
    shrinkage : float, default=1e-4
        Weight of the identity mixed into the covariance before inversion.
        Any value in (0, 1] makes the mixture positive definite, so that its
        pseudo-inverse is its inverse, computed by a Cholesky solve.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels seen so far (or given to the first ``partial_fit``).
    class_count_ : ndarray of shape (n_classes,)
        Training samples per class; classes at zero are never predicted.
    means_ : ndarray of shape (n_classes, n_features)
        Running class means.
    covariance_ : ndarray of shape (n_features, n_features)
        Pooled within-class covariance.
    n_features_in_ : int
        Number of input features.

    See Also
    --------
    NearestClassMean : The same means without the covariance.

    References
    ----------
    .. [1] T. L. Hayes and C. Kanan, "Lifelong Machine Learning with Deep
       Streaming Linear Discriminant Analysis", CVPR Workshops 2020.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skkvb.bench import StreamingLDA
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = StreamingLDA().partial_fit(X[y == 0], y[y == 0])
    >>> clf = clf.partial_fit(X[y > 0], y[y > 0])
    >>> clf.classes_, round(clf.score(X, y), 2)
    (array([0, 1, 2]), 0.98)
    """

    def __init__(self, shrinkage=1e-4):
        self.shrinkage = shrinkage

    def _allocate(self, n_features, n_classes):
        self.class_count_ = np.zeros(n_classes)
        self.means_ = np.zeros((n_classes, n_features))
        self._scatter = np.zeros((n_features, n_features))

    def _grow(self, source):
        self.class_count_ = _grow_rows(self.class_count_, source)
        self.means_ = _grow_rows(self.means_, source)

    def _learn(self, X, y_index):
        # Chan et al.'s pairwise update: exact pooled scatter for any batching.
        n_classes = len(self.classes_)
        batch_count = np.bincount(y_index, minlength=n_classes).astype(float)
        batch_sum = np.zeros_like(self.means_)
        np.add.at(batch_sum, y_index, X)
        present = batch_count > 0
        batch_mean = np.zeros_like(self.means_)
        batch_mean[present] = batch_sum[present] / batch_count[present, None]
        centred = X - batch_mean[y_index]
        total = self.class_count_ + batch_count
        gap = batch_mean - self.means_
        weight = np.divide(
            self.class_count_ * batch_count, total, where=total > 0, out=np.zeros(n_classes)
        )
        self._scatter += centred.T @ centred + (gap * weight[:, None]).T @ gap
        step = np.divide(batch_count, total, where=total > 0, out=np.zeros(n_classes))
        self.means_ += step[:, None] * gap
        self.class_count_ = total
        self.covariance_ = self._scatter / total.sum()
        self._solve()

    def _solve(self):
        eye = np.eye(self.covariance_.shape[0])
        shrunk = (1 - self.shrinkage) * self.covariance_ + self.shrinkage * eye
        try:
            # Positive definite for shrinkage > 0: the pseudo-inverse is the inverse,
            # and a Cholesky solve is several times cheaper than pinvh's eigh.
            weights = linalg.cho_solve(linalg.cho_factor(shrunk), self.means_.T).T
        except linalg.LinAlgError:
            weights = self.means_ @ linalg.pinvh(shrunk)
        self._weights = weights
        self._bias = -0.5 * np.einsum("kd,kd->k", self._weights, self.means_)

    def _scores(self, X):
        return X @ self._weights.T + self._bias

    def predict_proba(self, X):
        """Class posteriors under equal priors: the softmax of the discriminants.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities; zero for classes never seen.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return softmax(self._masked_scores(X), axis=1)


class NearestClassMean(_ScoringClassifier):
    """Nearest class mean (NCM): predict the class whose running mean is closest.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance to the class means. ``"cosine"`` compares directions only
        (inputs and means are L2-normalised before comparison).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels seen so far (or given to the first ``partial_fit``).
    class_count_ : ndarray of shape (n_classes,)
        Training samples per class; classes at zero are never predicted.
    means_ : ndarray of shape (n_classes, n_features)
        Running class means.
    n_features_in_ : int
        Number of input features.

    See Also
    --------
    StreamingLDA : Class means with a shared covariance.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skkvb.bench import NearestClassMean
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = NearestClassMean().partial_fit(X[:75], y[:75]).partial_fit(X[75:], y[75:])
    >>> round(clf.score(X, y), 2)
    0.93
    """

    def __init__(self, metric="euclidean"):
        self.metric = metric

    def _allocate(self, n_features, n_classes):
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {self.metric!r}.")
        self.class_count_ = np.zeros(n_classes)
        self.means_ = np.zeros((n_classes, n_features))

    def _grow(self, source):
        self.class_count_ = _grow_rows(self.class_count_, source)
        self.means_ = _grow_rows(self.means_, source)

    def _learn(self, X, y_index):
        batch_sum = np.zeros_like(self.means_)
        np.add.at(batch_sum, y_index, X)
        self._count(y_index)
        seen = self.class_count_ > 0
        batch_count = np.bincount(y_index, minlength=len(self.classes_))
        self.means_[seen] += (
            batch_sum[seen] - batch_count[seen, None] * self.means_[seen]
        ) / self.class_count_[seen, None]

    def _scores(self, X):
        if self.metric == "cosine":
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            means = self.means_ / np.maximum(
                np.linalg.norm(self.means_, axis=1, keepdims=True), 1e-12
            )
            return X @ means.T
        squared = (X**2).sum(1)[:, None] - 2 * X @ self.means_.T + (self.means_**2).sum(1)
        return -squared


class RandomReLURidgeClassifier(_ScoringClassifier):
    """RanPAC-style classifier: random ReLU features and streaming ridge statistics.

    A fixed Gaussian projection to ``n_components`` dimensions followed by a
    ReLU gives features ``H``; the Gram matrix ``G = H'H`` and ``Q = H'Y``
    (``Y`` one-hot) are summed over every batch, and the read-out is
    ``W = solve(G + alpha I, Q)``. The statistics are exact for any order of
    batches, so nothing is forgotten. The read-out is re-solved at the end of
    every ``partial_fit`` call (cubic in ``n_components``): feed large batches.

    Parameters
    ----------
    n_components : int, default=2000
        Dimension ``M`` of the random ReLU features.
    alpha : float, default=1.0
        Ridge penalty (lambda).
    random_state : int, RandomState instance or None, default=None
        Draws the projection at the first call.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels seen so far (or given to the first ``partial_fit``).
    class_count_ : ndarray of shape (n_classes,)
        Training samples per class; classes at zero are never predicted.
    projection_ : ndarray of shape (n_features, n_components)
        The fixed random projection, entries N(0, 1 / n_features).
    coef_ : ndarray of shape (n_components, n_classes)
        The ridge read-out ``W``.
    n_features_in_ : int
        Number of input features.

    References
    ----------
    .. [1] M. D. McDonnell et al., "RanPAC: Random Projections and
       Pre-trained Models for Continual Learning", NeurIPS 2023.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skkvb.bench import RandomReLURidgeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = RandomReLURidgeClassifier(n_components=200, random_state=0)
    >>> clf = clf.partial_fit(X[y < 2], y[y < 2]).partial_fit(X[y == 2], y[y == 2])
    >>> round(clf.score(X, y), 2)
    0.97
    """

    def __init__(self, n_components=2000, alpha=1.0, random_state=None):
        self.n_components = n_components
        self.alpha = alpha
        self.random_state = random_state

    def _allocate(self, n_features, n_classes):
        rng = check_random_state(self.random_state)
        self.projection_ = rng.standard_normal((n_features, self.n_components))
        self.projection_ /= np.sqrt(n_features)
        self.class_count_ = np.zeros(n_classes)
        self._gram = np.zeros((self.n_components, self.n_components))
        self._targets = np.zeros((self.n_components, n_classes))

    def _grow(self, source):
        self.class_count_ = _grow_rows(self.class_count_, source)
        self._targets = _grow_rows(self._targets, source, axis=1)

    def _features(self, X):
        return np.maximum(X @ self.projection_, 0.0)

    def _learn(self, X, y_index):
        one_hot = np.eye(len(self.classes_))[y_index]
        for start in range(0, len(X), _CHUNK):
            features = self._features(X[start : start + _CHUNK])
            self._gram += features.T @ features
            self._targets += features.T @ one_hot[start : start + _CHUNK]
        self._count(y_index)
        ridge = self._gram + self.alpha * np.eye(self.n_components)
        self.coef_ = linalg.cho_solve(linalg.cho_factor(ridge), self._targets)

    def _scores(self, X):
        return np.concatenate(
            [self._features(X[s : s + _CHUNK]) @ self.coef_ for s in range(0, len(X), _CHUNK)]
        )


class _WrappedProbe(_StreamingClassifier):
    """A scikit-learn gradient-descent classifier whose label set can grow.

    The wrapped estimator ``estimator_`` sees label indices, plus spare
    "not yet seen" outputs: one when the label set may grow, and as many as
    keep it at three outputs or more (so that scikit-learn never switches to
    its one-output binary form). Spare outputs only ever receive negative
    updates, exactly as an unseen class would if ``classes`` had been given
    upfront; a new class starts as a copy of a spare output, so a growing
    label set trains like a fixed one (the classifier's "not yet seen" column).
    Spare outputs are never predicted.
    """

    def _fit_epochs(self):
        return self.max_iter

    def _n_outputs(self, n_classes):
        spare = 0 if self._fixed_classes else 1
        return max(n_classes + spare, 3)

    def _allocate(self, n_features, n_classes):
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        self._seed = int(seed)
        self.class_count_ = np.zeros(n_classes)
        self.n_iter_ = 0
        self.estimator_ = self._make_estimator()

    def _grow(self, source):
        self.class_count_ = _grow_rows(self.class_count_, source)
        n_old = len(self.classes_)
        rows = np.full(self._n_outputs(len(source)), n_old)  # the first spare output
        rows[: len(source)][source >= 0] = source[source >= 0]
        self.estimator_ = self._transplant(self.estimator_, rows)

    def _learn(self, X, y_index):
        outputs = np.arange(self._n_outputs(len(self.classes_)))
        self._fit_batch(X, y_index, outputs)
        self._count(y_index)
        self.n_iter_ += 1

    def _fit_batch(self, X, y_index, outputs):
        self.estimator_.partial_fit(X, y_index, classes=outputs)

    def _real(self, scores):
        return scores[:, : len(self.classes_)]

    def predict_proba(self, X):
        """Class probabilities, renormalised over the real (non-spare) outputs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities of ``classes_``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        proba = self._real(self.estimator_.predict_proba(X))
        return proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-300)

    def predict(self, X):
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    predict.__doc__ = _ScoringClassifier.predict.__doc__


class SGDLinearProbe(_WrappedProbe):
    """Linear probe trained by plain SGD: ``SGDClassifier`` with a growing label set.

    Logistic loss, one-vs-rest, constant learning rate, no averaging: each
    ``partial_fit`` call is one epoch over the batch. Trained phase after
    phase it forgets, because nothing keeps the weights of earlier classes
    from being pushed down by later batches.

    Parameters
    ----------
    eta0 : float, default=0.01
        Constant learning rate.
    alpha : float, default=1e-4
        L2 penalty.
    max_iter : int, default=20
        Epochs run by ``fit`` (``partial_fit`` runs one).
    shuffle : bool, default=True
        Shuffle each batch before its epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the wrapped estimator's shuffling.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels seen so far (or given to the first ``partial_fit``).
    class_count_ : ndarray of shape (n_classes,)
        Training samples per class.
    estimator_ : SGDClassifier
        The wrapped estimator; its outputs are label indices plus spares.
    n_iter_ : int
        Epochs run so far (one per ``partial_fit`` call).
    n_features_in_ : int
        Number of input features.

    See Also
    --------
    MLPProbe : The same with one hidden layer.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skkvb.bench import SGDLinearProbe
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = SGDLinearProbe(random_state=0).fit(scale(X), y)
    >>> round(clf.score(scale(X), y), 1)
    0.9
    """

    def __init__(self, eta0=0.01, alpha=1e-4, max_iter=20, shuffle=True, random_state=None):
        self.eta0 = eta0
        self.alpha = alpha
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state

    def _make_estimator(self):
        return SGDClassifier(
            loss="log_loss",
            alpha=self.alpha,
            learning_rate="constant",
            eta0=self.eta0,
            shuffle=self.shuffle,
            random_state=self._seed,
        )

    def _transplant(self, old, rows):
        # SGDClassifier.partial_fit keeps coef_ and intercept_ that already exist.
        new = clone(old)
        new.coef_ = old.coef_[rows].copy()
        new.intercept_ = old.intercept_[rows].copy()
        return new


class MLPProbe(_WrappedProbe):
    """One-hidden-layer MLP probe: ``MLPClassifier`` with a growing label set.

    ReLU hidden layer, softmax output, Adam at learning rate 1e-3 (as in the
    DKVB paper's baselines); each ``partial_fit`` call is one epoch over the
    batch in minibatches of ``batch_size``. When the label set grows, the
    hidden layer and the known outputs are carried over and Adam's moment
    estimates restart. Trained phase after phase it forgets.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(128,)
        Hidden units per layer.
    learning_rate_init : float, default=1e-3
        Adam step size.
    alpha : float, default=1e-4
        L2 penalty.
    batch_size : int, default=256
        Minibatch size.
    max_iter : int, default=200
        Epochs run by ``fit`` (``partial_fit`` runs one).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights and the shuffling.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Labels seen so far (or given to the first ``partial_fit``).
    class_count_ : ndarray of shape (n_classes,)
        Training samples per class.
    estimator_ : MLPClassifier
        The wrapped estimator; its outputs are label indices plus spares.
    n_iter_ : int
        Epochs run so far (one per ``partial_fit`` call).
    n_features_in_ : int
        Number of input features.

    See Also
    --------
    SGDLinearProbe : The linear version.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skkvb.bench import MLPProbe
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPProbe(random_state=0).fit(scale(X), y)
    >>> round(clf.score(scale(X), y), 2)
    0.97
    """

    def __init__(
        self,
        hidden_layer_sizes=(128,),
        learning_rate_init=1e-3,
        alpha=1e-4,
        batch_size=256,
        max_iter=200,
        random_state=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.random_state = random_state

    def _make_estimator(self):
        return MLPClassifier(
            hidden_layer_sizes=self.hidden_layer_sizes,
            learning_rate_init=self.learning_rate_init,
            alpha=self.alpha,
            batch_size=self.batch_size,
            random_state=self._seed,
        )

    def _fit_batch(self, X, y_index, outputs):
        # scikit-learn warns when a batch is smaller than batch_size; it would clip it anyway.
        self.estimator_.set_params(batch_size=min(self.batch_size, len(X)))
        self.estimator_.partial_fit(X, y_index, classes=outputs)

    def _transplant(self, old, rows):
        # Build the larger network with a one-sample step (scikit-learn offers no
        # other public way to size its layers), then overwrite every weight.
        new = clone(old).set_params(batch_size=1)
        sample = np.zeros((1, old.n_features_in_))
        new.partial_fit(sample, [0], classes=np.arange(len(rows)))
        new.coefs_ = [w.copy() for w in old.coefs_[:-1]] + [old.coefs_[-1][:, rows].copy()]
        new.intercepts_ = [b.copy() for b in old.intercepts_[:-1]] + [
            old.intercepts_[-1][rows].copy()
        ]
        del new._optimizer  # Adam restarts: its moments belong to the discarded step
        return new
