"""An HTML page for a person to read, rendered from a Jinja2 template (``templates/page.html``).

The page stands alone on any machine: figures are PNG data URIs and the Japanese font that
matplotlib-fontja ships (IPAexGothic) is embedded, cut down to the characters the page uses, so
Japanese text renders even where the system has no CJK font (browsers fall back glyph by glyph:
a system Japanese font still wins where there is one). No script, no network.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

REPORT_FILE = "report.html"
DPI = 110
#: The family name the embedded subset is declared under in the page's CSS.
EMBEDDED_FONT = "kokorozoo IPAexGothic"


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kokorozoo.evaluation.reports", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def japanese_font_path() -> Path:
    """The TrueType file matplotlib-fontja installs (also the font of every figure)."""
    import matplotlib_fontja

    path = Path(matplotlib_fontja.__file__).parent / "fonts" / "ipaexg.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: matplotlib-fontja's font is missing; reinstall matplotlib-fontja")
    return path


def font_subset(text: str) -> bytes:
    """IPAexGothic as WOFF, holding only the glyphs of ``text`` (a page needs a few hundred of
    its ~12,000: tens of kilobytes instead of 4 MB)."""
    from fontTools import subset

    options = subset.Options()
    options.flavor = "woff"  # zlib: no brotli needed, and every browser reads it
    options.layout_features = ["*"]
    font = subset.load_font(str(japanese_font_path()), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    out = io.BytesIO()
    subset.save_font(font, out, options)
    return out.getvalue()


@dataclass
class Cell:
    text: str
    css: str = ""
    bold: bool = False


@dataclass
class Block:
    """One piece of the page, rendered by the template's macro of its ``kind``."""

    kind: str  # heading | text | table | figure
    text: str = ""
    level: int = 2
    note: bool = False
    header: list[Cell] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    folded: str = ""
    src: str = ""


def new_figure(width: float, height: float) -> Figure:
    """A figure without pyplot: no global state, no GUI backend, PNG through Agg."""
    import matplotlib_fontja  # noqa: F401  (registers IPAexGothic as matplotlib's font: Japanese glyphs)

    return Figure(figsize=(width, height), layout="constrained")


class Page:
    """An HTML page under construction. Figures are written as PNGs into the page's folder (for
    slides and READMEs) and embedded, so the page needs nothing beside it."""

    def __init__(self, title: str, out: Path):
        self.title, self.out = title, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.blocks: list[Block] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block("heading", text, level=level))

    def text(self, text: str, note: bool = False) -> None:
        self.blocks.append(Block("text", text, note=note))

    def table(
        self,
        header: Sequence[str],
        rows: Iterable[Sequence[Any]],
        caption: str = "",
        text_columns: int = 1,
        long_columns: Sequence[int] = (),
        bold: Iterable[tuple[int, int]] = (),
        folded: str = "",
    ) -> None:
        """The first ``text_columns`` are left-aligned labels, ``long_columns`` wrap as
        paragraphs, ``bold`` marks (row, column) cells (the best value of a column); a table
        with a ``folded`` summary starts closed. Wide tables scroll inside the page."""
        bold = set(bold)

        def css(j: int) -> str:
            return "long" if j in long_columns else "text" if j < text_columns else ""

        self.blocks.append(
            Block(
                "table",
                caption,
                header=[Cell(str(h), css(j)) for j, h in enumerate(header)],
                rows=[[Cell(str(v), css(j), (i, j) in bold) for j, v in enumerate(row)] for i, row in enumerate(rows)],
                folded=folded,
            )
        )

    def figure(self, fig: Figure, name: str, caption: str) -> Path:
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.blocks.append(Block("figure", caption, src=f"data:image/png;base64,{data}"))
        return path

    def shown_text(self) -> str:
        """Every character a reader can see, for the font subset."""
        parts = [self.title]
        for b in self.blocks:
            parts += [b.text, b.folded, *(c.text for c in b.header), *(c.text for row in b.rows for c in row)]
        return "".join(parts)

    def write(self, name: str = REPORT_FILE) -> Path:
        font = base64.b64encode(font_subset(self.shown_text())).decode("ascii")
        html = (
            _templates()
            .get_template("page.html")
            .render(title=self.title, blocks=self.blocks, font=font, font_family=EMBEDDED_FONT)
        )
        path = self.out / name
        path.write_text(html, encoding="utf-8")
        return path
