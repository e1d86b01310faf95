"""The report in a real browser on a machine without a Japanese font: headless Chromium (Debian's
``chromium``, driven by Playwright; nothing is downloaded), its fonts cut down to DejaVu through
fontconfig, draws every Japanese character of the page from the font the page embeds. The same
page without that font draws them from DejaVu, as empty boxes: the check can fail."""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from pathlib import Path

import pytest

from kokorozoo.evaluation.reports import build_run_report

CHROMIUM = os.environ.get("KOKOROZOO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
LATIN_FONTS = Path("/usr/share/fonts/truetype/dejavu")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not LATIN_FONTS.is_dir(),
    reason="no Chromium (or no DejaVu fonts) here: `apt-get install chromium fonts-dejavu-core`, as .ci/run does",
)


def japanese(text: str) -> list[str]:
    """The characters of ``text`` a Latin-only font cannot draw: kana, kanji, full-width forms."""
    return [c for c in text if ord(c) > 0x2E80 and unicodedata.category(c)[0] in "LNP"]


def glyph_sources(page: Path, tmp_path: Path) -> list[tuple[str, int, dict[str, int]]]:
    """For every text element with Japanese in it: its text, its Japanese characters and the
    glyphs Chromium drew for it from each font (``custom:`` for a page's own font)."""
    from playwright.sync_api import sync_playwright

    conf = tmp_path / "fonts.conf"
    conf.write_text(
        f'<?xml version="1.0"?><fontconfig><dir>{LATIN_FONTS}</dir><cachedir>{tmp_path / "cache"}</cachedir></fontconfig>'
    )
    env = {**os.environ, "FONTCONFIG_FILE": str(conf)}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], env=env)
        tab = browser.new_page()
        tab.goto(page.resolve().as_uri())
        tab.evaluate("document.fonts.ready")
        cdp = tab.context.new_cdp_session(tab)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        selector = "h1, h2, h3, p, caption, figcaption, th, td, summary"
        found = []
        for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]:
            text = cdp.send("DOM.resolveNode", {"nodeId": node})["object"]
            text = cdp.send("Runtime.callFunctionOn", {"objectId": text["objectId"],
                            "functionDeclaration": "function() { return this.textContent }", "returnByValue": True})  # fmt: skip
            text = text["result"]["value"]
            if not japanese(text):
                continue
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
            sources = {("custom:" if f["isCustomFont"] else "") + f["familyName"]: f["glyphCount"] for f in fonts}
            found.append((text, len(japanese(text)), sources))
        browser.close()
    return found


def test_japanese_renders_from_the_embedded_font_without_a_system_one(response_runs, seed_runs, tmp_path):
    report = build_run_report([seed_runs[0], response_runs[0]], tmp_path / "report", examples=2)
    shown = glyph_sources(report, tmp_path)
    assert len(shown) > 20  # item names, example turns, topics: the page is mostly Japanese
    for text, needed, sources in shown:
        embedded = sum(n for font, n in sources.items() if font.startswith("custom:"))
        assert embedded >= needed, (text[:60], sources)

    bare = tmp_path / "bare.html"  # the page as it was before it embedded its font
    bare.write_text(re.sub(r"@font-face \{[^}]*\}", "", report.read_text(encoding="utf-8")), encoding="utf-8")
    for _, _, sources in glyph_sources(bare, tmp_path):
        assert not any(font.startswith("custom:") for font in sources)  # DejaVu's empty boxes
