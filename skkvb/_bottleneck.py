"""What every key-value bottleneck estimator does with its codebook.

:class:`KeyValueBottleneckBase` fits (or copies) the codebook, re-seeds unused
keys, turns inputs into codes and masks never-fetched keys; the estimators
built on it (classifier, regressor) add their targets and value model. It
expects ``codebook``, ``device``, ``verbose`` and ``mask_unused_keys``
parameters and, once fitted, ``codebook_``, ``key_usage_``, ``_value_model``,
``_random_state`` and ``_weight_seen``.
"""

import copy

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import clone

from ._encoding import encode_array
from ._key_codebook import KeyCodebook, auto_n_keys
from ._validation import is_fitted
from .engine.codes import prepare_keys
from .engine.heads import project
from .engine.keys import reseed_unused_keys
from .engine.seeding import draw_seed, torch_generator

__all__ = ["KeyValueBottleneckBase", "positive_weight_rows"]

# Total sample weight a model may learn from: half of float32's range, so that
# class counts, their totals and SGD steps stay finite.
WEIGHT_BUDGET = float(np.finfo(np.float32).max) / 2


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


def positive_weight_rows(X, sample_weight, codebook=None):
    """The rows of X that keys are fitted (or re-seeded) on: those of positive
    weight, as if the others were not there. Raises if there are none and
    ``codebook`` still needs fitting."""
    if sample_weight is None or sample_weight.all():
        return X
    if not sample_weight.any() and (codebook is None or not is_fitted(codebook)):
        raise ValueError(
            "sample_weight is zero for every sample, but the keys are fitted on the "
            "samples of positive weight; give a batch with some, or a fitted codebook."
        )
    return X[sample_weight > 0]


class KeyValueBottleneckBase:
    """Codebook handling and encoding shared by the bottleneck estimators (private).

    Put it left of the scikit-learn mixins and ``BaseEstimator``: its
    ``set_params`` extends theirs.
    """

    def set_params(self, **params):
        """Set the parameters of this estimator and of its codebook.

        ``codebook__<name>`` works with the default ``codebook=None`` too: it
        first puts in the ``KeyCodebook(device=device, verbose=verbose)`` that
        None stands for, so ``GridSearchCV`` can search the default codebook's
        parameters.

        Parameters
        ----------
        **params : dict
            Estimator parameters, and ``codebook__<name>`` for the codebook's.

        Returns
        -------
        self : estimator instance
            This estimator.
        """
        nested = any(key.startswith("codebook__") for key in params)
        if nested and params.get("codebook", self.codebook) is None:
            device = params.get("device", self.device)
            verbose = params.get("verbose", self.verbose)
            params = {"codebook": KeyCodebook(device=device, verbose=verbose), **params}
        return super().set_params(**params)

    # ------------------------------------------------------------ codebook

    def _fitted_codebook(self, X, random_state, keep_fitted):
        """The codebook of a new model, fitted on X unless it came fitted.

        ``fit`` refits a clone of the codebook parameter (``keep_fitted=False``)
        and the first ``partial_fit`` keeps an already fitted one. A codebook
        that stays fitted is a private copy: a FrozenEstimator's clone is itself,
        so later changes to the user's codebook would otherwise leak in. An
        unfitted one without a random_state of its own is seeded from ours, so
        random_state alone makes fitting deterministic.

        Returns the codebook and whether it was fitted here: only such keys are
        the classifier's own to re-seed (``reseed_unused_keys``).
        """
        seed = random_state.randint(np.iinfo(np.int32).max)
        if self.codebook is None:
            codebook = KeyCodebook(device=self.device, verbose=self.verbose)
        else:
            codebook = clone(self.codebook)
            if is_fitted(codebook) or (keep_fitted and is_fitted(self.codebook)):
                codebook = copy.deepcopy(self.codebook)
        fits_here = not is_fitted(codebook)
        if fits_here:
            if codebook.random_state is None:
                codebook.set_params(random_state=seed)
            if keep_fitted and getattr(codebook, "n_keys", None) == "auto":
                # The first partial_fit: a stream's first batch does not bound the
                # data to come, so "auto" means what KeyCodebook.partial_fit makes it.
                codebook.set_params(n_keys=auto_n_keys(X.shape[0], stream=True))
            codebook.fit(X)
        self._check_codebook(codebook, X.shape[1])
        return codebook, fits_here

    def _codebook_reseeded_on(self, X):
        """A copy of the codebook whose keys no trained sample fetched are
        re-seeded on this batch's heads (see ``reseed_unused_keys``)."""
        codebook = copy.copy(self.codebook_)  # new arrays below: the old ones stay whole
        projection, keys = codebook.engine_tensors(self._value_model.device)
        heads = project(
            torch.as_tensor(_dense(X), dtype=torch.float32, device=keys.device),
            projection, keys.shape[0],
        )
        unused = torch.as_tensor(self.key_usage_ == 0, device=keys.device)
        generator = torch_generator(draw_seed(self._random_state))
        keys = reseed_unused_keys(keys, unused, heads, generator)
        codebook.keys_ = keys.cpu().numpy()
        # The codebook's own EMA state restarts at the new keys with count one,
        # as revived keys do (its sums follow from keys and counts).
        unused = unused.cpu().numpy()
        codebook.key_counts_ = np.where(unused, 1.0, codebook.key_counts_).astype(np.float32)
        return codebook

    @staticmethod
    def _check_codebook(codebook, n_features):
        if codebook.projection_.shape[0] != n_features:
            raise ValueError(
                f"X has {n_features} features, but the codebook was fitted on "
                f"{codebook.projection_.shape[0]} features."
            )

    # ------------------------------------------------------------ training

    def _check_weight_budget(self, batch_weight):
        """Refuse weights whose total would overflow the float32 value table: a
        key's count (and an SGD step) grows with the weight of its samples."""
        if self._weight_seen + batch_weight > WEIGHT_BUDGET:
            raise ValueError(
                f"sample_weight adds up to {batch_weight:.3g} in this call and "
                f"{self._weight_seen:.3g} before it, beyond the {WEIGHT_BUDGET:.3g} that "
                "the float32 value table holds; rescale the weights."
            )

    # ---------------------------------------------------------- encoding

    def _codes(self, X, key_mask=None):
        return self._chunk_encoder(key_mask)(X)

    def _chunk_encoder(self, key_mask):
        """Codes of one chunk of X, with the keys moved and prepared once per call."""
        projection, keys = self.codebook_.engine_tensors(self._value_model.device)
        prepared = prepare_keys(keys, key_mask)
        return lambda chunk: encode_array(chunk, projection, keys, prepared=prepared)

    def _key_mask(self):
        if not self.mask_unused_keys:
            return None
        used = torch.as_tensor(self.key_usage_ > 0, device=self._value_model.device)
        # A codebook no sample has fetched from (all weights zero) stays unmasked.
        return used | ~used.any(1, keepdim=True)
