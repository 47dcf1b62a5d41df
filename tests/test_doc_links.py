"""The "?" of each estimator's HTML repr links to its page of the API reference.

The pages are those Sphinx's autosummary writes for docs/api.rst: one per
entry, named ``<toctree>/<currentmodule>.<name>.html``. They are read off
api.rst here; the documentation is not built.
"""

import importlib
import inspect
from pathlib import Path

import pytest
from _helpers import ShapeAgnostic
from sklearn.base import BaseEstimator
from sklearn.utils import estimator_html_repr

from skkvb import KeyValueBottleneckClassifier
from skkvb._doc_link import DOCS_URL

API_RST = Path(__file__).resolve().parents[1] / "docs" / "api.rst"

# Arguments for classes that need some to be built.
ARGUMENTS = {
    "FrozenBackboneTransformer": lambda: (ShapeAgnostic(),),
    "StreamingPipeline": lambda: ([("clf", KeyValueBottleneckClassifier())],),
}


def api_pages():
    """{(module, name): page} for every autosummary entry of docs/api.rst."""
    pages, module, toctree, in_autosummary = {}, None, None, False
    for line in API_RST.read_text().splitlines():
        stripped = line.strip()
        if line.startswith(".. currentmodule::"):
            module = line.split("::")[1].strip()
        elif line.startswith(".. autosummary::"):
            in_autosummary, toctree = True, None
        elif in_autosummary and stripped.startswith(":toctree:"):
            toctree = stripped.split(":toctree:")[1].strip()
        elif in_autosummary and line.startswith("   ") and stripped and ":" not in stripped:
            pages[module, stripped] = f"{toctree.rstrip('/')}/{module}.{stripped}.html"
        elif stripped and not line.startswith(" "):
            in_autosummary = False
    return pages


def public_estimators():
    """(module, name) of every estimator class in the API reference."""
    found = []
    for module_name, name in api_pages():
        obj = getattr(importlib.import_module(module_name), name)
        if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
            found.append((module_name, name))
    return found


def test_the_reference_lists_estimators():
    names = {name for _, name in public_estimators()}
    assert {"KeyCodebook", "KeyValueBottleneckClassifier", "StreamingPipeline"} <= names


@pytest.mark.parametrize(("module_name", "name"), public_estimators())
def test_html_repr_links_to_the_api_page(module_name, name):
    cls = getattr(importlib.import_module(module_name), name)
    estimator = cls(*ARGUMENTS.get(name, tuple)())
    page = api_pages()[module_name, name]
    assert page.startswith("generated/")  # the toctree the class pages are written to
    link = DOCS_URL + page
    assert estimator._get_doc_link() == link
    assert f'href="{link}"' in estimator_html_repr(estimator)
