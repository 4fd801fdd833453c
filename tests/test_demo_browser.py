"""`imcap demo` in headless Chromium (selenium + chromedriver): pick an image on the page, read
back the captions and attention maps it shows; a file that is not an image gets a message on
the page. Skips, saying why, without selenium, chromium or chromedriver
(`apt-get install chromium chromium-driver`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_server import demo_app, served
from test_cli import make_project, run, write_images

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402  (only once selenium is known present)
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

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


def pick(browser: webdriver.Chrome, file: Path) -> None:
    browser.find_element(By.ID, "file").send_keys(str(file))


def test_a_picked_image_shows_its_captions_and_maps(browser, tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path / "repo", monkeypatch)
    image = write_images(tmp_path / "mine", 1, seed=4)[0]
    status, out, err = run(capsys, "caption", image, "--root", project, "--beam", "3")
    assert status == 0, err
    expected = out.split("\t", 1)[1].strip()
    app, _, _ = demo_app(monkeypatch, "--root", project)
    with served(app) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.ID, "model").text.startswith("Model: source: "))
        pick(browser, image)
        captions = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "p.caption"))
        shown = {c.get_attribute("data-decoding"): c.text for c in captions}
        assert shown["beam 3"] == expected and set(shown) == {"greedy", "beam 3"}
        maps = browser.find_elements(By.CSS_SELECTOR, "img.map")
        assert len(maps) == 2
        assert all(browser.execute_script("return arguments[0].naturalWidth", m) > 0
                   for m in maps)
        assert "img0.png (48×40), captioned by source: DVC outputs in" in browser.find_element(
            By.ID, "status").text
        assert browser.find_element(By.ID, "error").text == ""

        text = tmp_path / "notes.png"
        text.write_text("not an image")
        pick(browser, text)
        error = wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert error.startswith("notes.png: not an image")
        assert browser.find_elements(By.CSS_SELECTOR, "p.caption") == []
