"""Streaming batches through a pipeline into a final ``partial_fit``.

scikit-learn's :class:`~sklearn.pipeline.Pipeline` has no ``partial_fit``, so a
frozen encoder and a streaming classifier cannot be chained for continual
learning. :class:`StreamingPipeline` adds it: each batch goes through the
transformers and into the final estimator's ``partial_fit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sklearn import get_config
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils.metadata_routing import MetadataRouter, process_routing
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._compat import add_method_mappings
from ._doc_link import DocLinkMixin
from ._persistence import restore, snapshot
from ._typing import ArrayLike

if TYPE_CHECKING:
    import joblib

__all__ = ["StreamingPipeline", "make_streaming_pipeline"]


def _final_step_has_partial_fit(pipeline):
    return hasattr(pipeline.steps[-1][1], "partial_fit")


class StreamingPipeline(DocLinkMixin, Pipeline):
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
    :class:`~sklearn.pipeline.Pipeline`'s. Metadata such as ``sample_weight``
    reaches the steps as in ``Pipeline.fit``: by ``<step>__<name>``, or, with
    metadata routing enabled, as the steps request it.

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
    def partial_fit(
        self,
        X: Any,
        y: ArrayLike | None = None,
        classes: ArrayLike | None = None,
        **params: Any,
    ) -> StreamingPipeline:
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
        **params : dict
            Metadata for the steps (e.g. ``sample_weight``). Without metadata
            routing, as in :meth:`Pipeline.fit <sklearn.pipeline.Pipeline.fit>`:
            ``<step>__<name>`` goes to that step -- the final one's
            ``partial_fit``, or the ``partial_fit`` (or first ``fit_transform``)
            that updates an intermediate step -- and a plain ``<name>`` to the
            final ``partial_fit``. With ``sklearn.set_config(
            enable_metadata_routing=True)``, plain names are routed to the
            steps that request them (``set_partial_fit_request``; an
            intermediate step's ``set_fit_request`` on its first,
            fitting batch).

        Returns
        -------
        self : StreamingPipeline
            This pipeline.
        """
        # Routing is decided before any step changes: an unknown or unrequested
        # name raises with every step as it was.
        steps, final_params = self._partial_fit_params(params)
        # All or nothing across steps: a batch that an earlier step accepts and
        # a later one rejects must not leave the earlier one updated.
        saved = [(step, snapshot(step)) for step, _ in steps if _updates_on_stream(step)]
        try:
            Xt = X
            for step, step_params in steps:
                Xt = _stream_through(step, Xt, step_params)
            if classes is not None:
                final_params["classes"] = classes
            self.steps[-1][1].partial_fit(Xt, y, **final_params)
        except BaseException:
            for step, state in saved:
                restore(step, state)
            raise
        return self

    def _partial_fit_params(self, params):
        """``[(step, {method: params}), ...]`` of the intermediate steps, and the
        final ``partial_fit``'s params, routed or parsed from ``step__name``."""
        names = [name for name, step in self.steps if step is not None and step != "passthrough"]
        intermediate = [(name, step) for name, step in self.steps[:-1] if name in names]
        final_name = self.steps[-1][0]
        if get_config()["enable_metadata_routing"]:
            routed = process_routing(self, "partial_fit", **params)
            steps = [
                (step, {method: routed[name][method] for method in _stream_methods(step)})
                for name, step in intermediate
            ]
            return steps, dict(routed[final_name]["partial_fit"])
        per_step = {name: {} for name in names}
        for key, value in params.items():
            name, param = key.split("__", 1) if "__" in key else (final_name, key)
            if name not in per_step or not param:
                raise ValueError(
                    f"StreamingPipeline.partial_fit got the parameter {key!r}; give "
                    f"<step>__<name> with a step of {names}, or a plain name for the "
                    "final step's partial_fit."
                )
            per_step[name][param] = value
        steps = []
        for name, step in intermediate:
            methods = _stream_methods(step)
            if per_step[name] and methods == ("transform",):
                raise ValueError(
                    f"StreamingPipeline.partial_fit got {sorted(per_step[name])} for step "
                    f"{name!r}, which this batch only transforms (it is frozen or fitted)."
                )
            steps.append((step, {methods[0]: per_step[name]}))
        return steps, per_step[final_name]

    def get_metadata_routing(self) -> MetadataRouter:
        """Get the metadata routing of this pipeline.

        That of :class:`~sklearn.pipeline.Pipeline`, and for :meth:`partial_fit`:
        the final step's ``partial_fit``, and the methods it calls on each
        intermediate step (``partial_fit`` and ``transform``; ``fit_transform``
        on the batch that first fits it; ``transform`` alone once fitted or
        frozen).

        Returns
        -------
        routing : MetadataRouter
            A :class:`~sklearn.utils.metadata_routing.MetadataRouter` encapsulating
            routing information.
        """
        router = super().get_metadata_routing()
        for name, step in self.steps[:-1]:
            if step is not None and step != "passthrough":
                add_method_mappings(router, name, "partial_fit", _stream_methods(step))
        if _final_step_has_partial_fit(self):
            add_method_mappings(router, self.steps[-1][0], "partial_fit", ["partial_fit"])
        return router


def _stream_methods(step):
    """The methods :meth:`StreamingPipeline.partial_fit` calls on an intermediate
    step, in order: the first updates it (unless it only transforms)."""
    if isinstance(step, FrozenEstimator):
        return ("transform",)
    if hasattr(step, "partial_fit"):
        return ("partial_fit", "transform")
    try:
        check_is_fitted(step)
    except NotFittedError:
        return ("fit_transform",)
    return ("transform",)


def _updates_on_stream(step):
    """Whether :func:`_stream_through` changes ``step`` (partial_fit, or a first fit)."""
    return _stream_methods(step) != ("transform",)


def _stream_through(step, X, params):
    """Transform one batch with an intermediate step, fitting or updating it first.

    ``params`` maps each method of :func:`_stream_methods` to its parameters.
    """
    methods = _stream_methods(step)
    if methods == ("partial_fit", "transform"):
        step = step.partial_fit(X, **params.get("partial_fit", {}))
        return step.transform(X, **params.get("transform", {}))
    return getattr(step, methods[0])(X, **params.get(methods[0], {}))


def make_streaming_pipeline(
    *steps: Any,
    memory: str | joblib.Memory | None = None,
    transform_input: list[str] | None = None,
    verbose: bool = False,
) -> StreamingPipeline:
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
