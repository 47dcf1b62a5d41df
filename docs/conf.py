"""Sphinx configuration of the skkvb documentation.

Build (offline, warnings as errors), from the repository root::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The build never touches the network: intersphinx links to Python, NumPy,
scikit-learn, PyTorch and joblib are off unless ``SKKVB_DOCS_INTERSPHINX=1``,
and the gallery examples, executed during the build, use bundled or generated
data only. They run on one CPU thread unless ``SKKVB_DOCS_THREADS`` says
otherwise (see below).
"""

import os
import sys
from pathlib import Path

import skkvb

sys.path.insert(0, str(Path(__file__).parent / "sphinxext"))

# -- Project -----------------------------------------------------------------

project = "skkvb"
author = "The skkvb developers"
copyright = "The skkvb developers, BSD-3-Clause"
release = skkvb.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "sphinxext"]
root_doc = "index"
default_role = "literal"
nitpicky = False

# -- Cross-links to other projects (needs the network) -------------------------

INTERSPHINX = os.environ.get("SKKVB_DOCS_INTERSPHINX", "0").lower() in ("1", "true", "yes")
if INTERSPHINX:
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "joblib": ("https://joblib.readthedocs.io/en/stable", None),
    }

# -- API reference: autosummary, autodoc, numpydoc ---------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"

# Class pages list their own methods (templates in _templates/); numpydoc's
# member tables would list them a second time.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False


def _skip_member(app, what, name, obj, skip, options):
    """Document only the members that skkvb defines.

    Class pages include inherited members, so that the peers show the
    ``fit`` and ``partial_fit`` of their private base class. What scikit-learn
    adds -- ``get_params``, ``set_output``, metadata routing, the generated
    ``set_*_request`` methods, everything of ``Pipeline`` -- is documented by
    scikit-learn and left out here.
    """
    if what == "class":
        target = getattr(obj, "fget", obj)  # a property's getter
        module = getattr(target, "__module__", None) or ""
        if module.split(".")[0] != "skkvb":
            return True
    return skip


# -- Gallery ------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "gallery_order.ExampleOrder",
    "doc_module": ("skkvb",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"skkvb": None},
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "abort_on_example_error": True,
}

# Examples run in this process, without a display.
os.environ.setdefault("MPLBACKEND", "Agg")

# ... and on one CPU thread unless SKKVB_DOCS_THREADS says otherwise (0: the
# libraries' defaults). Their many small torch steps run fastest on one thread;
# several threads that wait on each other slow down badly when other processes
# share the cores (as skkvb-bench's --threads explains). On a busy 2-core
# machine the ablation example took 20 s on one thread and 113 s on two.
DOCS_THREADS = int(os.environ.get("SKKVB_DOCS_THREADS", "1"))
if DOCS_THREADS > 0:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(DOCS_THREADS)
    _thread_limits = threadpool_limits(DOCS_THREADS)

# -- HTML ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skkvb {release}"
html_static_path = []
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
