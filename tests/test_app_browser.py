"""The app in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

The app runs as a user starts it (python -m clipad.app) on a tiny checkpoint and a thresholds file, on a free
localhost port. The page gets an uploaded image; its score must equal predict's for the same image, the decision
follow the file's threshold and then a typed one, the overlay and the downloads be shown, and every resource the
page loaded come from the app itself (offline: no CDN, no analytics).
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
MISSING = [name for name, found in (("chromium", CHROMIUM), ("chromedriver (Debian's chromium-driver)", CHROMEDRIVER),
                                    ("selenium", importlib.util.find_spec("selenium")),
                                    ("gradio", importlib.util.find_spec("gradio"))) if not found]
if MISSING:
    pytest.skip(f"the browser test needs {', '.join(MISSING)}: apt-get install chromium chromium-driver; "
                "make install (selenium in dev, gradio in app)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from test_app import read_rows, tiny_checkpoint, write_images  # noqa: E402

import clipad  # noqa: E402
from clipad.calibration.thresholds import ClassThreshold, DecisionThresholds  # noqa: E402
from clipad.cli.hydra_setup import compose_config  # noqa: E402
from clipad.cli.predict import predict  # noqa: E402

REPO = Path(clipad.__file__).resolve().parents[2]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1700")
START_TIMEOUT = 90  # s until the app serves (imports torch and gradio, builds the model); ~15 s on 2 idle cores
RESULT_TIMEOUT = 30  # s from the click to the table


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppProcess:
    """`python -m clipad.app ...` in a child process; its output collected so a failure shows it."""

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "clipad.app", *args], cwd=cwd, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.url: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            match = re.match(r"clipad app: (\S+)", line)
            if match:
                self.url = match.group(1)

    def wait_until_serving(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self.url is None:
            assert self.process.poll() is None, "the app exited:\n" + "".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"the app did not serve within {timeout} s:\n" + "".join(self.lines[-40:])
            time.sleep(0.2)
        return self.url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="clipad-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_uploaded_image_is_scored_as_predict_scores_it_and_its_overlay_shown(tmp_path, browser):
    ckpt = tiny_checkpoint(tmp_path, "adaclip")  # the demo's model and data classes, at 112 px
    image = write_images(tmp_path / "images", 1, seed=3)[0]
    thresholds = DecisionThresholds(rule="fixed", fallback=ClassThreshold(0.25, None),
                                    classes={"synthetic": {"brick": ClassThreshold(0.625, 0.5)}}).write(tmp_path / "t.json")
    app = AppProcess(f"ckpt_path={ckpt}", f"thresholds={thresholds}", f"port={free_port()}",
                     f"output_dir={tmp_path / 'app'}", cwd=tmp_path)
    try:
        # predict's score while the app starts: the same image and object word (the first checkpoint class)
        summary = predict(compose_config("predict", [f"ckpt_path={ckpt}", f"input={image}", "class_name=brick",
                                                     f"output_dir={tmp_path / 'predict'}", "num_workers=0",
                                                     "save_figures=false"]), [])
        expected = float(read_rows(summary.scores_path)[0]["score"])
        url = app.wait_until_serving(START_TIMEOUT)
        browser.get(url)
        wait = WebDriverWait(browser, RESULT_TIMEOUT)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#images input[type=file]"))
        upload.send_keys(str(image))
        wait.until(lambda d: image.stem in d.find_element(By.ID, "images").text)  # uploaded (shown as stem | suffix)
        # the object name is prefilled with the checkpoint's first class
        assert browser.find_element(By.CSS_SELECTOR, "#class_name input").get_attribute("value") == "brick"
        browser.find_element(By.ID, "score").click()
        row = wait.until(lambda d: re.search(rf"{re.escape(image.name)}\s+(\d\.\d{{8}})\s+(pass|fail)",
                                             d.find_element(By.ID, "scores").text))
        shown = float(row.group(1))
        # scores.csv keeps 6 significant digits (<= 5e-7 off), the page 8 decimals; both scored the image alone
        assert abs(shown - expected) <= 1e-6, (shown, expected)
        # the slider starts at the thresholds file's entry for brick, and decides
        assert browser.find_element(By.CSS_SELECTOR, "#threshold_A input[type=number]").get_attribute("value") == "0.625"
        assert row.group(2) == ("fail" if shown >= 0.625 else "pass")
        overlays = wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#gallery_A img')].filter(i => i.complete && i.naturalWidth > 400)"
            ".map(i => i.src)"))
        assert overlays and all(src.startswith(url) for src in overlays), overlays
        assert "scored 1 images" in browser.find_element(By.ID, "status").text
        downloads = [browser.find_element(By.CSS_SELECTOR, f"#{name} a").get_attribute("href")
                     for name in ("scores_csv", "overlays_zip")]
        assert [Path(href).name for href in downloads] == ["scores.csv", "overlays.zip"], downloads
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        foreign = [r for r in resources if not r.startswith(url) and not r.startswith(("data:", "blob:"))]
        assert resources and not foreign, foreign
        # a threshold typed on the other side of the score flips the decision, without scoring again
        flipped = math.floor(shown * 1e4) / 1e4 if row.group(2) == "pass" else math.ceil(shown * 1e4) / 1e4 + 1e-4
        box = browser.find_element(By.CSS_SELECTOR, "#threshold_A input[type=number]")
        box.clear()
        box.send_keys(f"{flipped:.4f}", Keys.ENTER)
        other = {"pass": "fail", "fail": "pass"}[row.group(2)]
        wait.until(lambda d: re.search(rf"{row.group(1)}\s+{other}", d.find_element(By.ID, "scores").text))
        assert browser.save_screenshot(str(tmp_path / "app.png"))
    finally:
        app.stop()
