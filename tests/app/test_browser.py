"""The app in a real headless Chromium (Debian chromium + chromium-driver, driven by Selenium):
upload, attack, panels and plots render, tabs switch, the report downloads. A screenshot of the
page is saved on failure (tests/artifacts/); with CAFE_SCREENSHOTS=1 one per tab is written to
assets/screenshots/ for the README."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from cafe_core.serving.handlers import EXAMPLE_DIR

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

EXAMPLES = [str(p) for p in sorted(EXAMPLE_DIR.glob("*.png"))]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian chromium and chromium-driver")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "assets" / "screenshots"


@pytest.fixture(scope="module")
def server():
    import app

    demo = app.build_app()  # the shipped checkpoint set: real models, no dataset needed
    app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
        demo.analysis_pool.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,2200"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "profile.default_content_setting_values.automatic_downloads": 1})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    driver = item.funcargs.get("browser") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and driver is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"{item.name}.png"))


def shot(driver, name: str) -> None:
    if os.environ.get("CAFE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def click_tab(driver, wait, title: str) -> None:
    tab = wait.until(EC.element_to_be_clickable((By.XPATH, f"//button[@role='tab' and contains(., '{title}')]")))
    tab.click()


def captions(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#explore-gallery .caption-label")]


def test_first_screen_shows_a_fooled_example_and_the_first_click_shows_it_again(server, browser):
    wait = WebDriverWait(browser, 120)
    browser.set_window_size(1400, 2200)
    browser.get(server)
    # Before any click: the worked example of the first gallery image, panels and headline.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#explore-gallery img")) >= 8)
    assert "The attack worked" in browser.find_element(By.ID, "explore-headline").text
    before = captions(browser)
    assert any(c.startswith("Adversarial:") and c.endswith("✗") for c in before), before
    # Click the first gallery example, then the button.
    example = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#example-gallery .gallery-item")))
    example.click()
    time.sleep(1)
    browser.find_element(By.XPATH, "//button[contains(., 'Attack and explain')]").click()
    time.sleep(1)
    wait.until(lambda d: len(captions(d)) >= 8)
    after = captions(browser)
    adversarial = next(c for c in after if c.startswith("Adversarial:"))
    causal = next(c for c in after if c.startswith("Causal feature:"))
    assert adversarial.endswith("✗") and causal.endswith("✓"), after
    assert "no defense" in browser.find_element(By.TAG_NAME, "body").text, "the undefended network's row"


def test_upload_attack_panels_tabs_and_report_download(server, browser, downloads):
    wait = WebDriverWait(browser, 120)
    browser.get(server)
    wait.until(EC.presence_of_element_located((By.XPATH, "//h1[contains(., 'CAFE Lab')]")))
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    upload.send_keys(EXAMPLES[3])
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "img[alt]")))
    time.sleep(1)  # let the upload finish before the click
    browser.find_element(By.XPATH, "//button[contains(., 'Attack and explain')]").click()
    # The eight panels, each captioned with a prediction.
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#explore-gallery img")) >= 8)
    wait.until(EC.text_to_be_present_in_element((By.ID, "explore-summary"), "KL to the causal prediction"))
    captions = browser.find_element(By.ID, "explore-gallery").text
    assert "Clean:" in captions and "Causal inversion" in captions
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 2)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "no defense" in body and "TRADES + CAFE" in body, "the every-network table is on the page"
    shot(browser, "explore")
    # Download the report (PNG + JSON) through the page's own links.
    links = wait.until(lambda d: [a for a in d.find_elements(By.CSS_SELECTOR, "a[download]")
                                  if "cafe_lab_report" in (a.get_attribute("href") or "")] or False)
    for link in links:
        browser.execute_script("arguments[0].click();", link)
    deadline = time.time() + 30
    while time.time() < deadline and not {"cafe_lab_report.json", "cafe_lab_report.png"} <= {p.name for p in downloads.iterdir()}:
        time.sleep(0.5)
    assert {"cafe_lab_report.json", "cafe_lab_report.png"} <= {p.name for p in downloads.iterdir()}
    from cafe_core.serving.report import read_report

    assert read_report(downloads / "cafe_lab_report.json")["settings"]["attack"] == "pgd"
    # Tabs.
    click_tab(browser, wait, "Robustness")
    wait.until(EC.visibility_of_element_located((By.XPATH, "//button[contains(., 'Evaluate now')]")))
    shot(browser, "robustness")
    click_tab(browser, wait, "Train")
    wait.until(EC.visibility_of_element_located((By.XPATH, "//button[contains(., 'Train h and g')]")))
    shot(browser, "train")
    click_tab(browser, wait, "Learn")
    wait.until(EC.visibility_of_element_located((By.XPATH, "//*[contains(., 'Glossary')]")))
    browser.find_element(By.XPATH, "//button[contains(., 'Show this step')]").click()
    wait.until(lambda d: "robust network (adversarial training) reads it as" in d.find_element(By.TAG_NAME, "body").text)
    shot(browser, "learn")


def test_a_broken_upload_shows_a_clear_message_and_the_page_keeps_working(server, browser, tmp_path):
    wait = WebDriverWait(browser, 60)
    browser.get(server)
    bogus = tmp_path / "holiday.png"
    bogus.write_text("this is not a picture")
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    upload.send_keys(str(bogus))
    time.sleep(1)
    browser.find_element(By.XPATH, "//button[contains(., 'Classify only')]").click()
    wait.until(lambda d: "decode" in d.find_element(By.TAG_NAME, "body").text.lower()
               or "not an image" in d.find_element(By.TAG_NAME, "body").text.lower())
    browser.get(server)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    upload.send_keys(EXAMPLES[1])
    time.sleep(1)
    browser.find_element(By.XPATH, "//button[contains(., 'Classify only')]").click()
    wait.until(lambda d: "What the model sees" in d.find_element(By.TAG_NAME, "body").text)


@pytest.mark.parametrize("width,height", [(420, 860), (768, 1024), (1024, 768), (1400, 1000)])
def test_usable_at_phone_tablet_projector_and_desktop_widths(server, browser, width, height):
    """No horizontal scrolling, no text column narrower than 200 px, and on every width the
    Explore button comes before the example gallery (reachable without scrolling past it)."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    try:
        wait = WebDriverWait(browser, 120)
        browser.get(server)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#explore-gallery img")) >= 8)
        time.sleep(1)
        scroll, inner = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"horizontal scrolling at {width} px: page {scroll} px wide"
        narrow = browser.execute_script("""
            return [...document.querySelectorAll('.prose, .md')].filter(e => e.offsetParent !== null
                && e.innerText.trim().length > 20).map(e => [Math.round(e.getBoundingClientRect().width),
                e.innerText.slice(0, 40)]).filter(([w]) => w < 200);""")
        assert not narrow, f"text columns narrower than 200 px at {width} px: {narrow}"
        button = browser.find_element(By.XPATH, "//button[contains(., 'Attack and explain')]")
        gallery = browser.find_element(By.ID, "example-gallery")
        assert button.rect["y"] + button.rect["height"] <= gallery.rect["y"] + 1
        if width == 420:
            assert button.rect["y"] < 3 * height, "the button is within a few screens of the top on a phone"
        shot(browser, f"explore_{width}")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_an_out_of_distribution_upload_is_flagged_and_its_conversion_shown(server, browser, tmp_path):
    """A rendered digit on white: converted like Fashion-MNIST (steps shown) and flagged, still analysed."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.new("RGB", (200, 200), "white")
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 150)
    except OSError:
        font = ImageFont.load_default(size=150)
    ImageDraw.Draw(picture).text((45, 10), "7", fill="black", font=font)
    digit = tmp_path / "digit.png"
    picture.save(digit)
    wait = WebDriverWait(browser, 120)
    browser.get(server)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    upload.send_keys(str(digit))
    time.sleep(1)
    browser.find_element(By.XPATH, "//button[contains(., 'Attack and explain')]").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "explore-headline"), "does not look like a Fashion-MNIST image"))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "negate" in body.lower() and "what the model sees" in body.lower()
    assert len(captions(browser)) >= 8, "the analysis still runs"
