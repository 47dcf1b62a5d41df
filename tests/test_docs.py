"""The documentation's sources: API reference coverage, docstrings, gallery, config.

Building the documentation itself is a separate CI step (see docs/conf.py).
"""

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PUBLIC_MODULES = ["skkvb", "skkvb.streams", "skkvb.metrics", "skkvb.dask", "skkvb.bench"]


def public_names():
    """(module, name) for every name in the public modules' ``__all__``."""
    pairs = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        pairs += [(module_name, name) for name in module.__all__ if not name.startswith("__")]
    return pairs


def api_reference_entries():
    """(module, name) of every autosummary entry in docs/api.rst."""
    entries, module, in_autosummary = [], None, False
    for line in (DOCS / "api.rst").read_text().splitlines():
        if line.startswith(".. currentmodule::"):
            module = line.split("::")[1].strip()
        elif line.startswith(".. autosummary::"):
            in_autosummary = True
        elif in_autosummary and line.startswith("   ") and not line.strip().startswith(":"):
            if line.strip():
                entries.append((module, line.strip()))
        elif line.strip() and not line.startswith(" "):
            in_autosummary = False
    return entries


def test_api_reference_lists_every_public_name_and_nothing_else():
    documented = set(api_reference_entries())
    public = set(public_names())
    assert public - documented == set(), "public names missing from docs/api.rst"
    assert documented - public == set(), "docs/api.rst lists names that are not public"


@pytest.mark.parametrize(("module_name", "name"), public_names())
def test_public_name_has_a_numpydoc_examples_section(module_name, name):
    obj = getattr(importlib.import_module(module_name), name)
    sections = re.split(r"^\s*Examples\n\s*--------\n", obj.__doc__ or "", flags=re.MULTILINE)
    assert len(sections) == 2 and ">>> " in sections[1], (
        f"{module_name}.{name} has no numpydoc 'Examples' section with a doctest"
    )


def gallery_sources():
    return sorted(EXAMPLES.glob("plot_*.py"))


def test_gallery_has_a_header_and_five_examples():
    assert (EXAMPLES / "README.txt").read_text().strip()
    assert len(gallery_sources()) >= 5


@pytest.mark.parametrize("path", gallery_sources(), ids=lambda path: path.name)
def test_gallery_example_format(path):
    """sphinx-gallery format: a titled docstring, then ``# %%`` cells of code and prose."""
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    assert docstring, f"{path.name} must start with a docstring"
    lines = docstring.strip("\n").splitlines()
    overline, title, underline = lines[:3]
    assert set(overline) == {"="} and underline == overline, f"{path.name}: title markup"
    assert len(overline) >= len(title.strip()), f"{path.name}: title rule too short"
    assert source.count("\n# %%\n") >= 2, f"{path.name}: split the code into # %% cells"
    for forbidden in ("urlopen", "fetch_openml", "download=True", "requests."):
        assert forbidden not in source, f"{path.name} must not download ({forbidden})"


def test_docs_config_is_offline_by_default(monkeypatch):
    """Intersphinx (which reads inventories over the network) only on request."""
    monkeypatch.delenv("SKKVB_DOCS_INTERSPHINX", raising=False)
    monkeypatch.setenv("SKKVB_DOCS_THREADS", "0")  # leave this process's threads alone
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = {"__file__": str(DOCS / "conf.py")}
    exec(compile((DOCS / "conf.py").read_text(), "conf.py", "exec"), namespace)
    assert "sphinx.ext.intersphinx" not in namespace["extensions"]
    gallery = namespace["sphinx_gallery_conf"]
    assert gallery["examples_dirs"] == "../examples"
    assert gallery["gallery_dirs"] == "auto_examples"
    assert re.search(gallery["filename_pattern"], "/examples/plot_toy_forgetting.py")
