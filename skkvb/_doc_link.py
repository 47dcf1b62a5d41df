"""Links from an estimator's HTML representation to its page in the API reference.

scikit-learn's HTML repr (in Jupyter) shows a "?" that links to the
estimator's documentation, built from the class attributes ``_doc_link_module``
and ``_doc_link_template``; by default it points to scikit-learn's site, and
only for scikit-learn's own classes. :class:`DocLinkMixin` points it to ours.
"""

__all__ = ["API_PAGE", "DOCS_URL", "DocLinkMixin"]

#: Where the HTML documentation is served: the one place to change when it moves.
DOCS_URL = "https://skkvb.readthedocs.io/en/latest/"

#: The API page of a class, relative to :data:`DOCS_URL`: the page autosummary
#: writes for each entry of docs/api.rst (``:toctree: generated/``, named after
#: the ``currentmodule`` and the class). scikit-learn fills in the public module
#: (the class's module up to its first private part) and the class name.
API_PAGE = "generated/{estimator_module}.{estimator_name}.html"


class DocLinkMixin:
    """Point scikit-learn's HTML repr at this package's API reference.

    Put it left of ``BaseEstimator`` (or of the scikit-learn class extended).
    """

    _doc_link_module = "skkvb"
    _doc_link_template = DOCS_URL + API_PAGE
