"""`imcap compare A B --html page.html` in headless Chromium (selenium + chromedriver): the page,
opened from disk with nothing else, shows every chosen image decoded, both captions, the
references and the scores, and asks for no other resource. Skips, saying why, without
selenium, chromium or chromedriver (`apt-get install chromium chromium-driver`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_compare_page import page_project

from imcap import cli

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402  (only once selenium is known present)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium needs `chromium` and `chromedriver` on PATH "
           "(Debian: apt-get install chromium chromium-driver)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_images_captions_references_and_scores_from_itself_alone(
        browser, tmp_path, capsys):
    project = tmp_path / "repo"
    a, b, expected = page_project(project)
    page = tmp_path / "alone" / "page.html"  # away from the project: nothing to load beside it
    page.parent.mkdir()
    assert cli.main(["compare", str(a), str(b), "--root", str(project), "--html", str(page)]) == 0
    capsys.readouterr()
    browser.get(page.as_uri())
    articles = browser.find_elements(By.TAG_NAME, "article")
    assert [x.get_attribute("data-image") for x in articles] == expected
    b_side = browser.find_element(By.ID, "b-higher").find_elements(By.TAG_NAME, "article")
    assert [x.get_attribute("data-image") for x in b_side] == expected[:3]
    for article in articles:
        image = article.find_element(By.TAG_NAME, "img")
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image) == 80
        captions = article.find_elements(By.CSS_SELECTOR, "p.caption")
        assert [c.get_attribute("data-run") for c in captions] == ["A", "B"]
        assert all(c.is_displayed() and "CIDEr-D" in c.text and "BLEU-4" in c.text
                   for c in captions)
        references = article.find_elements(By.CSS_SELECTOR, "ol.references li")
        assert len(references) == 3 and all(r.is_displayed() and r.text for r in references)
    assert "BLEU-4   greedy" in browser.find_element(By.ID, "report").text
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested == []
