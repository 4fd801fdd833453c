"""The offline DVC plots template (plots/offline.html) must not need a CDN."""

import re
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "plots" / "offline.html"

# <script ... src=...> / <link ... href="http..."> anywhere in a document.
EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=", re.IGNORECASE)
EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def template() -> str:
    assert TEMPLATE.is_file(), f"missing {TEMPLATE}"
    return TEMPLATE.read_text(encoding="utf8")


def test_has_dvc_placeholders(template):
    # dvc_render.html.HTML requires "{plot_divs}".
    assert template.count("{plot_divs}") == 1
    # "{scripts}" must be absent: DVC fills it with its CDN <script src> tags.
    assert "{scripts}" not in template


def test_libraries_are_inlined(template):
    # UMD bundles assign these globals; vega-embed needs vega and vegaLite.
    assert ".vega={}" in template
    assert ".vegaLite={}" in template
    assert ".vegaEmbed=" in template
    assert len(template) > 500_000  # the three minified builds, not stubs
    assert "sourceMappingURL" not in template


def test_no_external_resources(template):
    assert not EXTERNAL_SCRIPT.search(template)
    assert not EXTERNAL_LINK.search(template)
    assert "cdn.jsdelivr.net" not in template


def test_rendered_page_has_no_external_script(tmp_path):
    pytest.importorskip("dvc_render")
    from dvc_render import render_html
    from dvc_render.vega import VegaRenderer

    points = [
        {"epoch": 1, "train_loss": 2.0, "val_bleu4": 0.10},
        {"epoch": 2, "train_loss": 1.2, "val_bleu4": 0.18},
    ]
    renderer = VegaRenderer(points, "train_log.csv", x="epoch", y="train_loss")
    out = Path(render_html([renderer], tmp_path / "index.html", html_template=str(TEMPLATE)))
    html = out.read_text(encoding="utf8")

    assert "vegaEmbed('#" in html  # the plot div was filled in
    assert '"train_loss"' in html
    assert "{plot_divs}" not in html
    assert not EXTERNAL_SCRIPT.search(html)
    assert "cdn.jsdelivr.net" not in html
