"""The report page: it renders escaped, and it carries the Japanese font it needs (a subset holding
every character a reader sees), so it reads the same on a machine without a CJK font."""

import base64
import html
import io
import re

import pytest
from fontTools.ttLib import TTFont

from kokorozoo.evaluation.reports.page import EMBEDDED_FONT, Page, new_figure
from kokorozoo.evaluation.reports.runs import describe

pytestmark = pytest.mark.mutation  # fast enough to run per mutant


def embedded_font(page: str) -> TTFont:
    found = re.findall(r"url\(data:font/woff;base64,([A-Za-z0-9+/=]+)\)", page)
    assert len(found) == 1
    return TTFont(io.BytesIO(base64.b64decode(found[0])))


def visible_text(page: str) -> str:
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    page = re.sub(r'src="data:[^"]+"', "", page)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_the_page_embeds_a_font_with_every_character_it_shows(tmp_path):
    page = Page("報告 <report>", tmp_path)
    page.heading("傾聴と共感")
    page.text("カウンセラーの応答", note=True)
    page.table(["項目", "ACC"], [["話を聞いてもらえた", "61.5"]], caption="表 & 図", folded="数値を見る")
    fig = new_figure(2, 1)
    fig.subplots().set_title("図の題名")
    page.figure(fig, "figure", "図のキャプション")
    written = page.write().read_text(encoding="utf-8")

    shown = visible_text(written)
    assert "報告 <report>" in shown and "<report>" not in written  # escaped, and shown as written
    font = embedded_font(written)
    cmap = font.getBestCmap()
    missing = {c for c in shown if not c.isspace() and ord(c) not in cmap}
    assert not missing
    assert f'"{EMBEDDED_FONT}"' in written.split("</style>")[0].split("body {")[1]  # in the body's fallbacks
    assert len(cmap) < 300 and len(written) < 400_000  # a subset, not the 4 MB font
    assert (tmp_path / "figure.png").is_file() and written.count("data:image/png;base64,") == 1
    assert "<details><summary>数値を見る</summary>" in written


def test_wide_tables_scroll_inside_the_page(tmp_path):
    page = Page("t", tmp_path)
    page.table([f"c{i}" for i in range(60)], [list(range(60))])
    written = page.write().read_text(encoding="utf-8")
    assert '<div class="scroll"><table>' in written and ".scroll { max-width: 100%; overflow-x: auto; }" in written


@pytest.mark.parametrize(
    "value, shown",
    [
        ("random", "random"),
        ({"acc": "argmax", "mae": "median"}, "acc: argmax, mae: median"),
        (
            {"kind": "client_disjoint", "sizes": {"train": 10, "test": 2}},
            "kind: client_disjoint, sizes (train: 10, test: 2)",
        ),
        ({"seeds": [0, 1]}, "seeds: 0, 1"),
    ],
)
def test_settings_are_described_not_printed_as_python(value, shown):
    assert describe(value) == shown
