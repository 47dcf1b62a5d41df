"""``class_weight`` of a streaming classifier: one weight per class of ``classes_``.

scikit-learn's ``compute_class_weight`` sees every label at once; a stream
sees them over time. Here the weights come from the per-class totals of sample
weight seen so far (``class_count_``):

- ``None``: every class weighs one.
- ``"balanced"``: ``W / (n_seen * W_j)`` for class j, with ``W_j`` its total
  sample weight so far, ``W`` the total over all classes and ``n_seen`` the
  number of classes with ``W_j > 0`` -- scikit-learn's "balanced" with sample
  weights in place of counts, over the classes seen so far. A class not seen
  yet weighs one (no sample carries it).
- a dict ``{label: weight}``: the classes it names get their weight, the others
  one. With a fixed class list a label outside it is an error, as in
  scikit-learn; with a growing one it waits for its class to arrive.
"""

import numbers

import numpy as np

from ._labels import label_kind

__all__ = ["class_totals", "class_weights", "grown_totals"]


def class_totals(class_index, sample_weight, n_classes):
    """Summed sample weight of each class in a batch, float64 (n_classes,).

    ``class_index`` holds each sample's position in ``classes_``; ``None``
    weights count each sample once.
    """
    return np.bincount(class_index, weights=sample_weight, minlength=n_classes).astype(float)


def grown_totals(totals, source):
    """``totals`` for a grown class list: ``source`` as in ``extend_label_set``
    (-1 for a new class, which starts at zero)."""
    source = np.asarray(source)
    return np.where(source >= 0, totals[np.maximum(source, 0)], 0.0)


def class_weights(class_weight, classes, totals, fixed):
    """The weight of each class of ``classes`` (float64), or None for ``None``.

    Raises ``ValueError`` naming ``class_weight`` for a dict with a weight that
    is not a finite number >= 0, labels of the other kind than ``classes``
    (numbers or strings), or, when ``fixed``, labels outside ``classes``.
    """
    if class_weight is None:
        return None
    weights = np.ones(len(classes))
    if isinstance(class_weight, str):  # "balanced"; other strings fail the parameter check
        seen = totals > 0
        weights[seen] = totals.sum() / (seen.sum() * totals[seen])
        return weights
    kind = label_kind(classes, "classes_")
    unknown = []
    for label, weight in class_weight.items():
        _check_weight(label, weight)
        if label_kind(np.asarray([label], dtype=object), "class_weight") != kind:
            raise ValueError(
                f"class_weight has the label {label!r}, but the classes are {kind}s: "
                f"{np.asarray(classes).tolist()[:10]}."
            )
        match = np.asarray(classes) == label
        if match.any():
            weights[match] = weight
        else:
            unknown.append(label)
    if fixed and unknown:
        raise ValueError(
            f"class_weight names labels {unknown} that are not among the classes "
            f"{np.asarray(classes).tolist()[:10]}."
        )
    return weights


def _check_weight(label, weight):
    number = isinstance(weight, numbers.Real) and not isinstance(weight, (bool, np.bool_))
    if not number or not np.isfinite(weight) or weight < 0:
        raise ValueError(
            f"class_weight[{label!r}] must be a finite number >= 0; got {weight!r}."
        )
