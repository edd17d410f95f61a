"""Sphinx configuration for the trio_msink documentation.

The build needs no network: no intersphinx inventories are fetched, and the
theme (alabaster) ships with Sphinx.
"""

from __future__ import annotations

import os
import sys

# Document the checkout, not whatever trio_msink happens to be installed.
sys.path.insert(0, os.path.abspath(".."))

import trio_msink

project = "trio_msink"
author = "the trio_msink contributors"
copyright = "the trio_msink contributors"
version = trio_msink.__version__
release = version

extensions = [
    "sphinx.ext.autodoc",
    "sphinxcontrib_trio",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3

# Offline build: no intersphinx inventories to download.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

root_doc = "index"
exclude_patterns = ["_build"]
default_role = "py:obj"
primary_domain = "py"
highlight_language = "python3"
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {
    "members": True,
}

html_theme = "alabaster"
html_theme_options = {
    "description": "Fan a live stream out to many clients, on Trio",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
