"""The live page: HTML, JavaScript and CSS shipped as package data.

``page/index.html`` is filled in once per request with the current numbers
(so the page shows them, and knows where the video is, before its first
``/stats`` request); ``page/page.js`` and ``page/page.css`` are served as
they are. No build step, no framework, no third-party code: see
``docs/fronts.md`` ("The live page").
"""

from __future__ import annotations

import html
import json
import string
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["ASSETS", "asset", "fill_page"]

# file name → Content-Type of the files served beside the page.
ASSETS = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}

# (JSON key and element id, label)
SINK_FIELDS = (("num_handles", "stream clients"), ("bytes_to_serve", "bytes to serve"),
               ("bytes_served", "bytes served"), ("buffers_queued", "buffers queued"))
SOURCE_FIELDS = (("spec", "source"), ("state", "state"), ("uptime", "uptime"),
                 ("bytes_in", "bytes in"), ("bitrate_in", "bitrate in"),
                 ("reconnects", "reconnects"), ("last_error", "last error"))
CLIENT_FIELDS = ("address", "front", "status", "lag_buffers", "buffers_dropped", "bytes_sent",
                 "connect_duration")


@cache
def asset(name: str) -> bytes:
    """The bytes of ``page/<name>`` (read once). Raises :exc:`FileNotFoundError`."""
    return resources.files(__package__).joinpath("page", name).read_bytes()


def _text(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _json_in_script(value: object) -> str:
    # JSON inside <script type="application/json">: only "</" could end it.
    return json.dumps(value).replace("</", "<\\/")


def fill_page(doc: dict[str, Any], *, stats_path: str, time_path: str, stream_path: str,
              asset_base: str) -> str:
    """``index.html`` with the numbers of the ``/stats`` document ``doc``.

    Element ids the page keeps up to date: ``num_handles``,
    ``bytes_to_serve``, ``bytes_served``, ``buffers_queued`` (one ``<td>``
    each, in ``table#sink-stats``); ``table#source-stats`` (hidden without a
    ``source``) with one ``td#source-<field>`` per source field; client rows
    in ``tbody#client-rows``, one ``td.<field>`` per column. ``asset_base``
    is prefixed to ``/page.js`` and ``/page.css``.
    """
    source: dict[str, Any] = doc.get("source") or {}
    sink_rows = "\n".join(
        f'<tr><th>{_text(label)}</th><td id="{key}">{_text(doc["sink"][key])}</td></tr>'
        for key, label in SINK_FIELDS)
    source_rows = "\n".join(
        f'<tr><th>{_text(label)}</th><td id="source-{key}">{_text(source.get(key))}</td></tr>'
        for key, label in SOURCE_FIELDS)
    client_rows = "\n".join(
        "<tr>" + "".join(f'<td class="{key}">{_text(row.get(key))}</td>'
                         for key in CLIENT_FIELDS) + "</tr>"
        for row in doc.get("clients", []))
    template = string.Template(asset("index.html").decode("utf-8"))
    return template.substitute(
        stats_path=_text(stats_path),
        time_path=_text(time_path),
        stream_path=_text(stream_path),
        asset_base=_text(asset_base),
        sink_rows=sink_rows,
        source_rows=source_rows,
        source_hidden="" if source else " hidden",
        client_rows=client_rows,
        initial_stats=_json_in_script(doc),
    )
