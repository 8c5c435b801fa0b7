"""A small document model for reports: sections of paragraphs, lists, tables and figures.

One document renders to Markdown (figures linked as PNG files) and to one self-contained HTML
file (figures embedded as base64 PNG). Writing it saves every figure as PNG and PDF under
``figures/`` and every table as CSV, LaTeX and Markdown under ``tables/``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from analysis.tables import Table

FIGURE_DPI = 150


@dataclass
class Paragraph:
    """Text with Markdown inline marks: ``**bold**``, ``*italic*`` and ```code```."""

    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Figure:
    """A matplotlib figure with a file stem and a caption; saved (and closed) when written."""

    name: str
    figure: object
    caption: str
    png: bytes | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name={self.name!r}: use a non-empty file stem without spaces or slashes")


Block = Union[Paragraph, Bullets, Figure, Table, "Section"]


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> "Section":
        self.blocks.extend(blocks)
        return self

    def iter_blocks(self):
        for block in self.blocks:
            if isinstance(block, Section):
                yield from block.iter_blocks()
            else:
                yield block

    def section_titles(self) -> list[str]:
        titles = [self.title]
        for block in self.blocks:
            if isinstance(block, Section):
                titles += block.section_titles()
        return titles


def _inline_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<i>\1</i>", text)
    return text


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
h1,h2,h3,h4{line-height:1.2} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} caption{text-align:left;padding:.3em 0;
caption-side:top;max-width:1000px} th,td{border:1px solid #ccc;padding:.25em .6em} td{text-align:right}
thead th{background:#f3f3f3} tbody th{text-align:left;font-weight:normal}
figure{margin:1.5em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444} code{background:#f5f5f5;padding:0 .2em} .note{font-size:.85em;color:#555}
nav ul{columns:2}
"""


class Document:
    """A report: a title, an introduction and a list of top-level sections."""

    def __init__(self, title: str, intro: list | None = None) -> None:
        self.title = title
        self.intro = intro or []
        self.sections: list[Section] = []

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    # ------------------------------------------------------------------ writing
    def write(self, out_dir: Path | str, stem: str = "report") -> dict[str, Path]:
        """Write figures, tables, ``stem``.md and ``stem``.html into ``out_dir``; return their paths."""
        out_dir = Path(out_dir)
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        (out_dir / "tables").mkdir(parents=True, exist_ok=True)
        for block in self._all_blocks():
            if isinstance(block, Figure):
                _save_figure(block, out_dir / "figures")
            elif isinstance(block, Table):
                block.write(out_dir / "tables")
        markdown_path = out_dir / f"{stem}.md"
        html_path = out_dir / f"{stem}.html"
        markdown_path.write_text(self.to_markdown())
        html_path.write_text(self.to_html())
        return {"markdown": markdown_path, "html": html_path}

    def _all_blocks(self):
        yield from Section("", self.intro).iter_blocks()
        for section in self.sections:
            yield from section.iter_blocks()

    # ------------------------------------------------------------------ Markdown
    def to_markdown(self) -> str:
        parts = [f"# {self.title}", ""]
        parts += [_block_markdown(block, 2) for block in self.intro]
        for section in self.sections:
            parts.append(_section_markdown(section, 2))
        return "\n".join(parts).rstrip() + "\n"

    # ------------------------------------------------------------------ HTML
    def to_html(self) -> str:
        toc = "".join(
            f'<li><a href="#{_slug(s.title)}">{html.escape(s.title)}</a></li>' for s in self.sections
        )
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        body += [_block_html(block, 2) for block in self.intro]
        body.append(f"<nav><ul>{toc}</ul></nav>")
        body += [_section_html(section, 2) for section in self.sections]
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + f'\n<p class="note">Generated {stamp} by <code>python -m analysis</code>.</p>\n</body></html>\n'
        )


def _save_figure(block: Figure, directory: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    figure = block.figure
    # one layout pass for both formats: the tight box (legends below axes included), padded
    bbox = figure.get_tightbbox(figure.canvas.get_renderer()).padded(0.08)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches=bbox)
    block.png = buffer.getvalue()
    (directory / f"{block.name}.png").write_bytes(block.png)
    figure.savefig(directory / f"{block.name}.pdf", bbox_inches=bbox)
    plt.close(figure)


def _section_markdown(section: Section, level: int) -> str:
    parts = [f"{'#' * level} {section.title}", ""]
    parts += [_block_markdown(block, level + 1) for block in section.blocks]
    return "\n".join(parts)


def _block_markdown(block, level: int) -> str:
    if isinstance(block, Section):
        return _section_markdown(block, level)
    if isinstance(block, Paragraph):
        return block.text + "\n"
    if isinstance(block, Bullets):
        return "\n".join(f"* {item}" for item in block.items) + "\n"
    if isinstance(block, Table):
        return block.to_markdown()
    if isinstance(block, Figure):
        return (f"![{block.name}](figures/{block.name}.png)\n\n"
                f"*Figure `{block.name}`.* {block.caption} "
                f"([PNG](figures/{block.name}.png), [PDF](figures/{block.name}.pdf))\n")
    raise TypeError(f"cannot render {type(block).__name__} as Markdown")


def _section_html(section: Section, level: int) -> str:
    level = min(level, 6)
    parts = [f'<section><h{level} id="{_slug(section.title)}">{html.escape(section.title)}</h{level}>']
    parts += [_block_html(block, level + 1) for block in section.blocks]
    parts.append("</section>")
    return "\n".join(parts)


def _block_html(block, level: int) -> str:
    if isinstance(block, Section):
        return _section_html(block, level)
    if isinstance(block, Paragraph):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return block.to_html()
    if isinstance(block, Figure):
        if block.png is None:
            raise RuntimeError(f"figure {block.name} was not saved before rendering HTML")
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure id="figure-{block.name}"><img alt="{html.escape(block.name)}" '
                f'src="data:image/png;base64,{data}"><figcaption><i>Figure <code>{html.escape(block.name)}'
                f"</code>.</i> {_inline_html(block.caption)}</figcaption></figure>")
    raise TypeError(f"cannot render {type(block).__name__} as HTML")
