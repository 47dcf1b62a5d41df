"""Streaming batches through a pipeline into a final ``partial_fit``.

scikit-learn's :class:`~sklearn.pipeline.Pipeline` has no ``partial_fit``, so a
frozen encoder and a streaming classifier cannot be chained for continual
learning. :class:`StreamingPipeline` adds it: each batch goes through the
transformers and into the final estimator's ``partial_fit``.
"""

from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._persistence import restore, snapshot

__all__ = ["StreamingPipeline", "make_streaming_pipeline"]


def _final_step_has_partial_fit(pipeline):
    return hasattr(pipeline.steps[-1][1], "partial_fit")


class StreamingPipeline(Pipeline):
    """A :class:`~sklearn.pipeline.Pipeline` with ``partial_fit`` for streams.

    ``partial_fit`` passes one batch through the intermediate steps and then to
    the final estimator's ``partial_fit``. Each intermediate step, in order:

    - a :class:`~sklearn.frozen.FrozenEstimator` only transforms;
    - a step with ``partial_fit`` (e.g. ``StandardScaler``) is updated with the
      batch, then transforms it;
    - a step that is not fitted yet is fitted on the first batch (for a
      :class:`FrozenBackboneTransformer` that only builds the encoder), then
      only transforms;
    - a fitted step only transforms.

    Everything else -- ``fit``, ``predict``, parameters, pickling -- is
    :class:`~sklearn.pipeline.Pipeline`'s.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        As in :class:`~sklearn.pipeline.Pipeline`; the last estimator needs
        ``partial_fit`` for :meth:`partial_fit` to be available.
    transform_input : list of str, default=None
        As in :class:`~sklearn.pipeline.Pipeline`.
    memory : str or joblib.Memory, default=None
        As in :class:`~sklearn.pipeline.Pipeline` (caches ``fit`` only). To
        cache embeddings in a stream, give the transformer its own ``memory``.
    verbose : bool, default=False
        As in :class:`~sklearn.pipeline.Pipeline`.

    See Also
    --------
    make_streaming_pipeline : Build one without naming the steps.
    skkvb.FrozenBackboneTransformer : The frozen encoder step.

    Examples
    --------
    Keys are fitted once on unlabelled embeddings (the paper's protocol), then
    classes arrive one phase after another:

    >>> import numpy as np
    >>> import torch
    >>> from sklearn.frozen import FrozenEstimator
    >>> from skkvb import (FrozenBackboneTransformer, KeyCodebook,
    ...                    KeyValueBottleneckClassifier, make_streaming_pipeline)
    >>> rng = np.random.RandomState(0)
    >>> labels = np.repeat([0, 1, 2], 30)
    >>> noise = rng.randint(0, 50, (90, 8, 8, 3))
    >>> images = (100 * labels[:, None, None, None] + noise).astype(np.uint8)
    >>> _ = torch.manual_seed(0)
    >>> encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
    >>> embedder = FrozenBackboneTransformer(encoder, device="cpu").fit(images)
    >>> codebook = KeyCodebook(n_codebooks=16, n_keys=16, key_dim=4, random_state=0)
    >>> codebook = codebook.fit(embedder.transform(images))  # no labels used
    >>> pipe = make_streaming_pipeline(
    ...     embedder,
    ...     KeyValueBottleneckClassifier(codebook=FrozenEstimator(codebook),
    ...                                  device="cpu", random_state=0))
    >>> for phase in ([0, 1], [2]):  # class-incremental: class 2 arrives later
    ...     batch = np.isin(labels, phase)
    ...     pipe = pipe.partial_fit(images[batch], labels[batch], classes=[0, 1, 2])
    >>> pipe.predict(images[::30])
    array([0, 1, 2])
    """

    @available_if(_final_step_has_partial_fit)
    def partial_fit(self, X, y=None, classes=None, **partial_fit_params):
        """Stream one batch through the transformers into the final ``partial_fit``.

        Parameters
        ----------
        X : array-like or list
            One batch of inputs for the first step.
        y : array-like of shape (n_samples,), default=None
            Its targets.
        classes : array-like, default=None
            All classes of the stream, passed on to the final estimator when
            given (scikit-learn classifiers need it on the first call; a
            KeyValueBottleneckClassifier can also grow its classes).
        **partial_fit_params : dict
            Passed on to the final estimator's ``partial_fit`` (e.g.
            ``sample_weight``).

        Returns
        -------
        self : StreamingPipeline
            This pipeline.
        """
        steps = [step for _, step in self.steps[:-1] if step is not None and step != "passthrough"]
        # All or nothing across steps: a batch that an earlier step accepts and
        # a later one rejects must not leave the earlier one updated.
        saved = [(step, snapshot(step)) for step in steps if _updates_on_stream(step)]
        try:
            Xt = X
            for step in steps:
                Xt = _stream_through(step, Xt)
            if classes is not None:
                partial_fit_params["classes"] = classes
            self.steps[-1][1].partial_fit(Xt, y, **partial_fit_params)
        except BaseException:
            for step, state in saved:
                restore(step, state)
            raise
        return self


def _updates_on_stream(step):
    """Whether :func:`_stream_through` changes ``step`` (partial_fit, or a first fit)."""
    if isinstance(step, FrozenEstimator):
        return False
    if hasattr(step, "partial_fit"):
        return True
    try:
        check_is_fitted(step)
    except NotFittedError:
        return True
    return False


def _stream_through(step, X):
    """Transform one batch with an intermediate step, fitting or updating it first."""
    if isinstance(step, FrozenEstimator):
        return step.transform(X)
    if hasattr(step, "partial_fit"):
        return step.partial_fit(X).transform(X)
    try:
        check_is_fitted(step)
    except NotFittedError:
        return step.fit_transform(X)
    return step.transform(X)


def make_streaming_pipeline(*steps, memory=None, transform_input=None, verbose=False):
    """Build a :class:`StreamingPipeline` from estimators, naming them automatically.

    The streaming counterpart of :func:`sklearn.pipeline.make_pipeline`.

    Parameters
    ----------
    *steps : list of estimators
        The transformers, then the final estimator.
    memory : str or joblib.Memory, default=None
        Passed to :class:`StreamingPipeline`.
    transform_input : list of str, default=None
        Passed to :class:`StreamingPipeline`.
    verbose : bool, default=False
        Passed to :class:`StreamingPipeline`.

    Returns
    -------
    pipeline : StreamingPipeline
        The pipeline, its steps named after their lowercased class names.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skkvb import make_streaming_pipeline
    >>> make_streaming_pipeline(StandardScaler(), SGDClassifier())
    StreamingPipeline(steps=[('standardscaler', StandardScaler()),
                             ('sgdclassifier', SGDClassifier())])
    """
    steps = make_pipeline(*steps).steps
    return StreamingPipeline(steps, memory=memory, transform_input=transform_input, verbose=verbose)
