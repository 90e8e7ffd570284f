"""The web page in a real browser: Debian's Chromium, headless, driven by Selenium + chromedriver.

The server runs in this process on a free loopback port with the tiny model. The test uploads an
example photo in two languages, waits for both captions, checks the page's labels and that the
browser fetched nothing from anywhere but this server (Chrome's network log), copies a caption as
alt text, and leaves a screenshot in the test's tmp folder. It skips, saying why, only when
Chromium, chromedriver or Selenium is missing (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'polycap[serve]'")
selenium = pytest.importorskip("selenium", reason="selenium is not installed: pip install selenium")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver); "
        "the real-browser test cannot run",
        allow_module_level=True,
    )

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cat.jpg"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1200,1000",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """polycap serve, in a thread, on a free loopback port; yields its base URL once ready."""
    import httpx
    import torch
    import uvicorn

    from polycap.serve import ServeSettings, create_app

    threads = torch.get_num_threads()  # the server sets one thread (torch_threads=1); restored below

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServeSettings(models=("polycap-tiny-random",), device="cpu", torch_threads=1))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not become ready")
        time.sleep(0.1)
    yield base
    srv.should_exit = True
    thread.join(15)
    torch.set_num_threads(threads)


@pytest.fixture
def browser(monkeypatch) -> Iterator:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as e:  # e.g. a chromedriver that does not match the browser
        pytest.skip(f"Chromium could not be started by chromedriver: {e.msg}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_upload_a_photo_and_read_captions_in_two_languages(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 45)
    browser.get(server + "/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#lang-options input[value='de']"))

    unlabelled = browser.execute_script(
        """return [...document.querySelectorAll('input, select, button')]
             .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
             .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                           && !(el.tagName === 'BUTTON' && el.textContent.trim()))
             .map(el => el.id || el.outerHTML);"""
    )
    assert unlabelled == [], f"controls without a label: {unlabelled}"

    browser.find_element(By.ID, "photo").send_keys(str(EXAMPLE))
    wait.until(ec.visibility_of_element_located((By.ID, "preview")))
    browser.find_element(By.CSS_SELECTOR, "label[for='lang-de']").click()
    browser.find_element(By.ID, "submit").send_keys(Keys.ENTER)  # keyboard, not a mouse click

    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".caption-text")) == 2)
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    captions = [c.find_element(By.CSS_SELECTOR, ".caption-text") for c in cards]
    assert [c.get_attribute("lang") for c in captions] == ["en", "de"]
    for caption in captions:
        assert caption.text.strip(), "empty caption"
    assert browser.find_elements(By.CSS_SELECTOR, ".caption-error") == []
    assert "Captions ready" in browser.find_element(By.ID, "status").text

    copy = cards[0].find_element(By.CSS_SELECTOR, "button.copy")
    assert "alt text" in copy.get_attribute("aria-label")
    copy.click()
    wait.until(lambda d: "Cop" in d.find_element(By.ID, "status").text)  # "Copied" or the fallback hint

    shot = tmp_path / "serve-ui.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000

    urls = _requested_urls(browser)
    assert any(u.startswith(server + "/v1/captions") for u in urls), urls
    outside = [u for u in urls if not u.startswith((server + "/", "data:", "blob:"))]
    assert outside == [], f"the page loaded resources from elsewhere: {outside}"


def _requested_urls(browser) -> list[str]:
    """Every URL the page asked the network for, from Chrome's DevTools performance log."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
