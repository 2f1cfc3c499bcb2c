"""HTML pages of jndlab, rendered from the Jinja2 templates in ``analysis/templates/``.

Every HTML report (``python -m analysis report``, ``python -m analysis preference``, the
pipeline's summary page) is a template filled with plain data: no markup is built in
Python, and autoescaping is on for every template, so a worker ID or a file name is
always text. The pieces:

- ``section(title, note=..., figures=[...], blocks=[...])``: one section of a report page;
- ``figure(png, alt)``: a figure with the PNG embedded as base64 (a self-contained page)
  and links to the PNG and the PDF beside it;
- ``table(df, columns)``, ``bullets(items)``, ``heading(text)``: the blocks of a section;
- ``render_page(title, subtitle, sections, warnings, csvs)``: the report page
  (``report.html``); ``render(template, **context)`` any other template.

Templates are package data of ``analysis`` (``templates/*.html``).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .formatting import format_cell

__all__ = ["TEXT_COLUMNS", "bullets", "figure", "heading", "render", "render_page", "section", "table"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Columns of text, left-aligned and wrapped (numbers are right-aligned).
TEXT_COLUMNS = frozenset(
    {
        "reason",
        "notes",
        "reasons",
        "jnd_text",
        "jnd_physical_text",
        "worker",
        "family",
        "reference",
        "metric",
        "physical_param",
        "group",
        "dataset",
        "flags",
    }
)


@functools.lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """The template ``analysis/templates/<template>`` rendered with ``context`` (autoescaped).

    Raises jinja2.TemplateNotFound for an unknown template and jinja2.UndefinedError when
    the template uses a name ``context`` lacks.
    """
    return _environment().get_template(template).render(**context)


def figure(path: str | Path, alt: str, href: str | None = None, wide: bool = False) -> dict:
    """A figure block: the PNG at ``path`` embedded as a base64 data URI, captioned ``alt``,
    with links to the PNG (``href``, default its file name) and to the PDF beside it when
    there is one. ``wide`` gives it the page's whole width. Raises OSError when the PNG
    cannot be read."""
    path = Path(path)
    href = href or path.name
    links = [("PNG", href)]
    if path.with_suffix(".pdf").is_file():
        links.append(("PDF", href[:-4] + ".pdf"))
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"alt": alt, "src": f"data:image/png;base64,{data}", "links": links, "wide": wide}


def table(df: pd.DataFrame | None, columns: Iterable[str] | None = None, max_rows: int = 200) -> dict:
    """A table block of ``df``'s ``columns`` (default all; names it lacks are skipped), the
    first ``max_rows`` rows with cells as ``analysis.formatting.format_cell`` writes them,
    and a note of how many more rows the CSV holds. An empty or missing table is "(empty)"."""
    if df is None or df.empty:
        return {"kind": "table", "empty": True}
    cols = [c for c in (list(columns) if columns is not None else list(df.columns)) if c in df.columns]
    rows = [
        [format_cell(v, c) for c, v in zip(cols, row)]
        for row in df[cols].head(max_rows).itertuples(index=False, name=None)
    ]
    return {
        "kind": "table",
        "empty": False,
        "header": [c.replace("_", " ") for c in cols],
        "text": [c in TEXT_COLUMNS for c in cols],
        "rows": rows,
        "more": max(len(df) - max_rows, 0),
    }


def bullets(items: Iterable[str]) -> dict:
    """A bulleted list block, one item per string."""
    return {"kind": "list", "entries": [str(i) for i in items]}


def heading(text: str, level: int = 3) -> dict:
    """A heading block inside a section (h3 by default)."""
    return {"kind": "heading", "text": text, "level": int(level)}


def section(
    title: str,
    *,
    note: str = "",
    figures: Iterable[dict] = (),
    blocks: Iterable[dict] = (),
    warnings: Iterable[str] = (),
    level: int = 2,
) -> dict:
    """One report section: a heading of ``level``, a note, warnings, figures (``figure``)
    side by side, then the blocks (``table``, ``bullets``, ``heading``) in order."""
    return {
        "title": title,
        "note": note,
        "figures": list(figures),
        "blocks": list(blocks),
        "warnings": list(warnings),
        "level": int(level),
    }


def render_page(title: str, subtitle: str, sections: list[dict], warnings: list[str], csvs: list[str]) -> str:
    """A report page (``report.html``): the title, a subtitle with links to the ``csvs``
    beside it, the page's warnings, then the sections. One self-contained HTML document:
    no scripts, no external CSS, figures embedded; it fits a 1280 px window (tables scroll
    inside their box, figures scale down)."""
    return render("report.html", title=title, subtitle=subtitle, sections=sections, warnings=warnings, csvs=csvs)
