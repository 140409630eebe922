"""The page as a description, and its two renderings: HTML (``index.html``) and Markdown (``report.md``).

A :class:`Section` is a title and its blocks in order (paragraphs, bullet points, tables, figures,
links), plus the parts it could not show and why. :func:`to_html` and :func:`to_markdown` render a
:class:`Page` of sections; nothing here computes a number or draws a figure.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import partial

import pandas as pd

from bench.runs.tables import fmt

cell_text = partial(fmt, digits=4, nan="", grouped_from=1e4)  # a number in a table of the page


@dataclass
class Text:
    text: str
    cls: str = ""  # "missing", "warn"


@dataclass
class Points:
    items: list[str]
    cls: str = ""  # HTML: a box of paragraphs of this class; without one, a bullet list


@dataclass
class Table:
    name: str  # tables/<name>.csv holds its data
    frame: pd.DataFrame
    classes: list[str] | None = None  # one per row, e.g. "worse"


@dataclass
class Data:
    """A table written to ``tables/<name>.csv`` but not shown: a link to it, after ``text``."""
    name: str
    frame: pd.DataFrame
    text: str


@dataclass
class Figure:
    path: str
    alt: str


@dataclass
class Link:
    path: str  # relative to the page


@dataclass
class Section:
    """One titled part of the page: its blocks, in order, and what it could not show."""
    title: str
    blocks: list = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def text(self, text: str, cls: str = "") -> None:
        self.blocks.append(Text(text, cls))

    def points(self, items, cls: str = "") -> None:
        self.blocks.append(Points(list(items), cls))

    def table(self, name: str, frame: pd.DataFrame, classes=None) -> None:
        self.blocks.append(Table(name, frame, classes))

    def link(self, path: str) -> None:
        self.blocks.append(Link(path))

    def data(self, name: str, frame: pd.DataFrame, text: str) -> None:
        self.blocks.append(Data(name, frame, text))

    def not_shown(self, why: str) -> None:
        self.missing.append(why)
        self.text(f"Not shown: {why}", "missing")

    def figure(self, drawn: tuple[str | None, str | None], alt: str) -> None:
        """A ``fig_*`` function's ``(path, why)``: the figure, or why it is not shown."""
        path, why = drawn
        if path:
            self.blocks.append(Figure(path, alt))
        else:
            self.not_shown(why)


@dataclass
class Page:
    title: str
    machine: str
    commit: str
    details: str  # after the commit, on the HTML page only: dirty, torch version, time
    sections: list[Section]


# -- HTML -----------------------------------------------------------------------------------------
WRAP_FROM = 40  # characters: a text column holding a longer value wraps, like a reason


def html_table(frame: pd.DataFrame, classes=None) -> str:
    """A table in a box that scrolls sideways on its own (the page never does): numbers right-aligned, words
    left, reasons and other long texts wrapped; ``classes`` per row (e.g. worse)."""
    def kind(c) -> str:
        if pd.api.types.is_numeric_dtype(frame[c]):
            return "n"
        long = frame[c].map(lambda v: len(str(v))).max() > WRAP_FROM if len(frame) else False
        return "w" if "reason" in str(c) or long else "t"

    kinds = [kind(c) for c in frame.columns]
    rows = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td class={k}>{html.escape(cell_text(v))}</td>" for k, v in zip(kinds, row))
        rows.append(f"<tr{cls}>{cells}</tr>")
    head = "".join(f"<th class={k}>{html.escape(str(c))}</th>" for k, c in zip(kinds, frame.columns))
    return (f'<div class="table-wrap" style="overflow-x:auto;max-width:100%"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _html_link(path: str, text: str = "") -> str:
    before = f"{html.escape(text)}: " if text else ""
    return f'<p>{before}<a href="{path}">{html.escape(path.rsplit("/", 1)[-1])}</a></p>'


def html_block(block) -> str:
    match block:
        case Text(text, cls):
            return f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>"
        case Points(items, cls) if cls:
            return f'<div class="{cls}">' + "".join(f"<p>{html.escape(i)}</p>" for i in items) + "</div>"
        case Points(items):
            return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"
        case Table(name, frame, classes):
            return html_table(frame, classes) + _html_link(f"tables/{name}.csv")
        case Figure(path, alt):
            return f'<img src="{path}" alt="{html.escape(alt)}">'
        case Data(name, _, text):
            return _html_link(f"tables/{name}.csv", text)
        case Link(path):
            return _html_link(path)
    raise TypeError(f"not a block of the page: {block!r}")


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>
<script>window.pageErrors=[];window.addEventListener("error",function(e){{window.pageErrors.push(String(e.message||e))}},true);
(function(){{var log=console.error;
console.error=function(){{window.pageErrors.push([].join.call(arguments," "));log.apply(console,arguments)}}}})();
window.addEventListener("load",function(){{
var bad=[].filter.call(document.images,function(i){{return !i.complete||i.naturalWidth===0}});
var b=document.body,d=document.documentElement;b.setAttribute("data-broken-images",bad.length);
b.setAttribute("data-errors",window.pageErrors.length);b.setAttribute("data-page-width",d.scrollWidth);
b.setAttribute("data-view-width",d.clientWidth);b.setAttribute("data-window-width",window.innerWidth);
b.setAttribute("data-page-height",d.scrollHeight);b.setAttribute("data-checked","yes")}});</script>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}}
h1{{font-size:1.6em;margin-bottom:.2em}}h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}}
nav{{font-size:13px;margin:.6em 0 1em}}nav a{{margin-right:.9em;white-space:nowrap}}
.table-wrap{{overflow-x:auto;max-width:100%}}table{{border-collapse:collapse;font-size:12px;margin:.5em 0}}
td,th{{border:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap}}th{{background:#f3f3f3}}
.n{{text-align:right}}td.w{{white-space:normal;min-width:22em;max-width:40em}}
tr.worse td{{background:#fdd;color:#a00;font-weight:600}}tr.better td{{background:#dfd}}tr.fail td{{background:#fdd}}
tr.skipped td{{color:#777}}tr.differs td{{background:#fff4d6;font-weight:600}}
.headline{{background:#f5f9ff;border-left:4px solid #36c;padding:.4em 1em}}
.missing{{color:#a35a00}}.warn{{background:#fff4e0;border-left:4px solid #e90;padding:.4em 1em}}
.machine{{color:#444}}img{{max-width:100%;border:1px solid #eee;margin:.4em 0}}
code{{background:#f3f3f3;padding:0 3px}}p,li,h1,h2{{overflow-wrap:anywhere}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def to_html(page: Page) -> str:
    """``index.html``: the machine, a link to each section (its title up to a colon), the sections."""
    anchors = [f"s{i}" for i in range(len(page.sections))]
    nav = " ".join(f'<a href="#{a}">{html.escape(s.title.split(":")[0])}</a>' for a, s in zip(anchors, page.sections))
    intro = (f'<p class="machine">Machine {html.escape(page.machine)}. Commit <code>{html.escape(page.commit)}</code>'
             f"{html.escape(page.details)}.</p><nav>{nav}</nav>")
    body = "".join(f'<h2 id="{a}">{html.escape(s.title)}</h2>' + "".join(map(html_block, s.blocks))
                   for a, s in zip(anchors, page.sections))
    return PAGE.format(title=html.escape(page.title), body=intro + body)


# -- Markdown -------------------------------------------------------------------------------------
def md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell_text(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _md_link(path: str) -> str:
    return f"[{path.rsplit('/', 1)[-1]}]({path})"


def md_block(block) -> str:
    match block:
        case Text(text):
            return f"\n{text}\n"
        case Points(items):
            return "".join(f"- {i}\n" for i in items)
        case Table(name, frame):
            return "\n" + md_table(frame) + f"\n{_md_link(f'tables/{name}.csv')}\n"
        case Figure(path, alt):
            return f"\n![{alt}]({path})\n"
        case Data(name, _, text):
            return f"\n{text}: {_md_link(f'tables/{name}.csv')}\n"
        case Link(path):
            return f"\n{_md_link(path)}\n"
    raise TypeError(f"not a block of the page: {block!r}")


def to_markdown(page: Page) -> str:
    """``report.md``: the same sections as the HTML page, with links to the same tables and figures."""
    return (f"# {page.title}\n\nMachine {page.machine}. Commit `{page.commit}`.\n"
            + "".join(f"\n## {s.title}\n\n" + "".join(map(md_block, s.blocks)) for s in page.sections))
