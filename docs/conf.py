"""Sphinx configuration for the trio_msink documentation.

The build needs no network: no intersphinx inventories are fetched, and the
theme (alabaster) ships with Sphinx.
"""

from __future__ import annotations

import enum
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


# -- the Sink's property table, generated from its declaration -----------------

from docutils import nodes  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402
from sphinx.application import Sphinx  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


def _default_text(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"``{type(value).__name__}.{value.name}``"
    if isinstance(value, bool):
        return f"``{value}``"
    return str(value)


class SinkPropertiesDirective(SphinxDirective):
    """``.. sink-properties::``: the table of ``Sink.properties()`` (name,
    default, unit, doc), so that the docs cannot drift from the code."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 24 20 12 44",
            "",
            "   * - property",
            "     - default",
            "     - unit",
            "     - meaning",
        ]
        for prop in trio_msink.Sink.properties():
            unit = "" if prop.unit is None else (
                f"``{prop.unit}``" if "_" in prop.unit else prop.unit)
            lines += [
                f"   * - ``{prop.name}``",
                f"     - {_default_text(prop.default)}",
                f"     - {unit}",
                f"     - {prop.doc}",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="Sink.properties()"),
                                self.content_offset, container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("sink-properties", SinkPropertiesDirective)
    return {"parallel_read_safe": True}
