"""Tables with marked cells (best bold, second underlined) rendered as Markdown, HTML, LaTeX and CSV.

The CSV holds the raw numbers (full precision, for recomputation); the other formats hold the
formatted text with the marks.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

MISSING = "—"


def format_number(value, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, without exponent between 1e-3 and 1e5."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING if value is None else str(value)
    if not math.isfinite(value):
        return MISSING if math.isnan(value) else ("∞" if value > 0 else "−∞")
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 5 or magnitude < -3:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def format_percent(value, decimals: int = 2) -> str:
    """A fraction as a signed percentage (0.0123 → ``+1.23 %``)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING
    if not math.isfinite(value):
        return MISSING
    return f"{100 * value:+.{decimals}f} %"


def format_pvalue(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MISSING
    if not math.isfinite(value):
        return MISSING
    return f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}"


@dataclass
class Table:
    """A captioned table: raw values for CSV, display text, and bold / underline masks."""

    name: str
    caption: str
    values: pd.DataFrame
    text: pd.DataFrame
    bold: pd.DataFrame | None = None
    underline: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    index_label: str = "task"

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name={self.name!r}: use a non-empty file stem without spaces or slashes")
        self.text = self.text.astype(object).where(self.text.notna(), MISSING).astype(str)

    @classmethod
    def from_values(
        cls,
        name: str,
        caption: str,
        values: pd.DataFrame,
        formatter: Callable[[object], str] = format_number,
        lower_is_better: bool | None = None,
        **kwargs,
    ) -> "Table":
        """Format every cell with ``formatter``; mark best/second per row unless ``lower_is_better`` is None."""
        from analysis.summaries import rank_marks

        text = values.apply(lambda column: column.map(formatter))
        bold = underline = None
        if lower_is_better is not None:
            bold, underline = rank_marks(values, lower_is_better=lower_is_better)
        return cls(name, caption, values, text, bold, underline, **kwargs)

    # ------------------------------------------------------------------ cell access
    def _mask_array(self, mask: pd.DataFrame | None) -> np.ndarray:
        if mask is None:
            return np.zeros(self.text.shape, dtype=bool)
        if mask.index.equals(self.text.index) and mask.columns.equals(self.text.columns):
            return mask.fillna(False).to_numpy(dtype=bool)
        aligned = mask.reindex(index=self.text.index, columns=self.text.columns)
        return aligned.fillna(False).to_numpy(dtype=bool)

    def _cells(self):
        """Rows as (label, [(text, bold, underline), ...]) by position, so duplicate labels are fine."""
        text = self.text.to_numpy(dtype=object)
        bold, underline = self._mask_array(self.bold), self._mask_array(self.underline)
        for i, row in enumerate(self.text.index):
            yield row, [(str(text[i, j]), bool(bold[i, j]), bool(underline[i, j]))
                        for j in range(text.shape[1])]

    # ------------------------------------------------------------------ renderers
    def to_markdown(self) -> str:
        def cell(text: str, bold: bool, underline: bool) -> str:
            text = text.replace("|", "\\|")
            if underline:
                text = f"<u>{text}</u>"
            if bold:
                text = f"**{text}**"
            return text

        header = [self.index_label] + [str(c) for c in self.text.columns]
        lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
                 "|" + "|".join(["---"] + ["--:"] * len(self.text.columns)) + "|"]
        for row, cells in self._cells():
            lines.append("| " + " | ".join([str(row)] + [cell(*c) for c in cells]) + " |")
        parts = [f"*Table `{self.name}`.* {self.caption}", "", "\n".join(lines)]
        parts += [f"<sub>{note}</sub>" for note in self.notes]
        return "\n".join(parts) + "\n"

    def to_html(self) -> str:
        def cell(text: str, bold: bool, underline: bool) -> str:
            text = html.escape(text)
            if underline:
                text = f"<u>{text}</u>"
            if bold:
                text = f"<b>{text}</b>"
            return f"<td>{text}</td>"

        header = "".join(f"<th>{html.escape(str(c))}</th>" for c in [self.index_label, *self.text.columns])
        body = "\n".join(
            "<tr><th>" + html.escape(str(row)) + "</th>" + "".join(cell(*c) for c in cells) + "</tr>"
            for row, cells in self._cells()
        )
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in self.notes)
        return (
            f'<table id="table-{self.name}"><caption><i>Table <code>{html.escape(self.name)}</code>.</i> '
            f"{html.escape(self.caption)}</caption>\n<thead><tr>{header}</tr></thead>\n"
            f"<tbody>\n{body}\n</tbody></table>{notes}\n"
        )

    def to_latex(self) -> str:
        def cell(text: str, bold: bool, underline: bool) -> str:
            text = latex_escape(text)
            if underline:
                text = f"\\underline{{{text}}}"
            if bold:
                text = f"\\textbf{{{text}}}"
            return text

        columns = "l" + "r" * len(self.text.columns)
        header = " & ".join(latex_escape(str(c)) for c in [self.index_label, *self.text.columns])
        body = "\n".join(
            " & ".join([latex_escape(str(row))] + [cell(*c) for c in cells]) + r" \\"
            for row, cells in self._cells()
        )
        notes = "".join(f"\n\\par\\footnotesize {latex_escape(n)}" for n in self.notes)
        return (
            "% requires \\usepackage{booktabs}\n"
            "\\begin{table}[t]\n\\centering\n"
            f"\\caption{{{latex_escape(self.caption)}}}\n\\label{{tab:{self.name}}}\n"
            f"\\begin{{tabular}}{{{columns}}}\n\\toprule\n{header} \\\\\n\\midrule\n{body}\n"
            f"\\bottomrule\n\\end{{tabular}}{notes}\n\\end{{table}}\n"
        )

    def write(self, directory: Path) -> dict[str, Path]:
        """Write ``name``.csv (raw values), .tex and .md into ``directory``; return the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "csv": directory / f"{self.name}.csv",
            "tex": directory / f"{self.name}.tex",
            "md": directory / f"{self.name}.md",
        }
        values = self.values.copy()
        values.index.name = self.index_label
        values.to_csv(paths["csv"])
        paths["tex"].write_text(self.to_latex())
        paths["md"].write_text(self.to_markdown())
        return paths


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
}
_LATEX_UNICODE = {
    "β": r"$\beta$", "α": r"$\alpha$", "δ": r"$\delta$", "τ": r"$\tau$", "λ": r"$\lambda$",
    "±": r"$\pm$", "—": "---", "–": "--", "−": "$-$", "†": r"$^\dagger$", "×": r"$\times$",
    "²": r"$^2$", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$", "∞": r"$\infty$", "·": r"$\cdot$",
    "₀": r"$_0$", "→": r"$\rightarrow$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and spell the Unicode symbols the tables use as math."""
    out = []
    for char in text:
        if char in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[char])
        elif char in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[char])
        else:
            out.append(char)
    return "".join(out)


def dagger_where(text: pd.DataFrame, mask: pd.DataFrame) -> pd.DataFrame:
    """Append ``†`` to the cells where ``mask`` is true (used for partial coverage)."""
    mask = mask.reindex_like(text).fillna(False).astype(bool)
    return text.where(~mask, text + "†")


def empty_frame(index=(), columns=()) -> pd.DataFrame:
    return pd.DataFrame(np.nan, index=list(index), columns=list(columns))
