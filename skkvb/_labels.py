"""Label sets of streaming classifiers: fixed upfront, or growing as labels arrive.

Used by every classifier of the package (the bottleneck and the benchmark's
peers), so that they accept, reject and order labels the same way. The class
list is always sorted; a new label is inserted in its sorted place, and
``source`` arrays say where each class of the new list was in the old one.
"""

import numbers

import numpy as np

__all__ = ["extend_label_set", "label_kind", "label_positions", "start_label_set"]


def label_kind(labels, name):
    """``"number"`` or ``"string"``: what ``labels`` hold; a ValueError if they mix."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "biuf":
        return "number"
    if labels.dtype.kind in "US":
        return "string"
    types = {type(label) for label in labels.ravel()}
    kinds = {
        "string" if issubclass(t, str) else "number" if issubclass(t, numbers.Number) else t
        for t in types
    }
    if len(kinds) > 1 or (kinds and not kinds <= {"string", "number"}):
        names = ", ".join(sorted(t.__name__ for t in types))
        raise ValueError(
            f"{name} has labels of types {names}; labels must be all numbers or all "
            "strings."
        )
    return kinds.pop() if kinds else "number"


def start_label_set(y, classes=None):
    """The label set of a first ``partial_fit`` call: ``(classes_, fixed)``.

    With ``classes`` the set is fixed to it (sorted) and every label of ``y``
    must be in it; without, it is the sorted labels of ``y`` and may grow.
    """
    if classes is None:
        return np.unique(y), False
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.size == 0:
        raise ValueError(
            f"classes must be a non-empty 1-D array of labels; got shape {classes.shape}."
        )
    kind, y_kind = label_kind(classes, "classes"), label_kind(y, "y")
    if kind != y_kind:
        raise ValueError(f"classes holds {kind} labels, but y holds {y_kind} labels.")
    if classes.dtype.kind == "f" and np.isnan(classes).any():
        raise ValueError("classes contains NaN, which cannot be a class label.")
    classes = np.unique(classes)
    _check_known(_in_dtype_of(np.unique(y), classes, "y"), classes)
    return classes, True


def extend_label_set(classes_, fixed, y, classes=None):
    """The label set after a later ``partial_fit`` call: ``(classes_, source)``.

    ``source`` is None when the set did not change; otherwise ``source[j]`` is
    the index in the old set of new class ``j``, or -1 for a new label.
    ``classes``, if given again, must equal the set; a fixed set never grows.
    """
    kind, known = label_kind(y, "y"), label_kind(classes_, "classes_")
    if kind != known:
        raise ValueError(
            f"y holds {kind} labels, but the classes seen so far are {known}s: "
            f"{classes_.tolist()[:10]}."
        )
    if classes is not None and not np.array_equal(np.unique(classes), classes_):
        raise ValueError(
            "classes may only be given on the first call to partial_fit, or equal to "
            f"classes_ {classes_.tolist()}; got {np.unique(classes).tolist()}."
        )
    labels = _in_dtype_of(np.unique(y), classes_, "y")
    if fixed:
        _check_known(labels, classes_)
        return classes_, None
    new_labels = np.setdiff1d(labels, classes_)
    if new_labels.size == 0:
        return classes_, None
    merged = np.union1d(classes_, new_labels)
    source = np.full(len(merged), -1)
    source[np.searchsorted(merged, classes_)] = np.arange(len(classes_))
    return merged, source


def label_positions(classes_, y):
    """Position of each label of ``y`` in the sorted ``classes_``.

    Raises ``ValueError`` naming the labels of ``y`` that ``classes_`` does not
    hold (compared as Python values, so ``3.0`` is the class ``3``), and for
    labels of the other kind (numbers or strings).
    """
    kind, known = label_kind(y, "y"), label_kind(classes_, "classes_")
    if kind != known:
        raise ValueError(
            f"y holds {kind} labels, but the classes are {known}s: {classes_.tolist()[:10]}."
        )
    known_labels = set(classes_.tolist())
    unknown = [label for label in np.unique(y).tolist() if label not in known_labels]
    if unknown:
        raise ValueError(
            f"y contains labels {unknown[:10]} that are not among the classes learned: "
            f"{classes_.tolist()[:10]}."
        )
    return np.searchsorted(classes_, np.asarray(y).astype(classes_.dtype))


def _in_dtype_of(labels, classes, name):
    """``labels`` as ``classes``' dtype, or a ValueError if that would change any.

    numpy would otherwise promote (int64 and uint64 to float64, int64 to
    float64 past 2**53) and silently merge distinct labels, or turn an integer
    class list into floats. Strings keep numpy's promotion, which loses nothing.
    """
    if labels.dtype.kind not in "biuf" or classes.dtype.kind not in "biuf":
        return labels
    with np.errstate(invalid="ignore", over="ignore"):
        cast = labels.astype(classes.dtype)
    # Python compares int and float values exactly: no wrap-around, no rounding.
    if cast.tolist() != labels.tolist():
        raise ValueError(
            f"{name} holds labels {labels.tolist()[:10]} of dtype {labels.dtype} that the "
            f"classes' dtype {classes.dtype} cannot hold exactly; give every class "
            "upfront with classes= in one dtype."
        )
    return cast


def _check_known(y, classes):
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise ValueError(
            f"y contains labels {unknown.tolist()} that are not in the classes given to "
            f"the first partial_fit call: {classes.tolist()}."
        )
