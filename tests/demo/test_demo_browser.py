"""The demo end to end in headless Chromium (Debian's chromium + chromium-driver, installed by `make setup`)."""

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from pointalign.checkpoint import save_checkpoint
from tests.conftest import clouds

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _driver(tmp_path):
    from selenium import webdriver

    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.fail("Debian chromium and chromium-driver are missing: run `make setup` as root")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1100",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(DRIVER)))


def _wait(predicate, timeout=90.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is still rendering
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_demo_upload_ask_answer_and_3d_view(tiny_model, tiny_config, tiny_data, tmp_path):
    from selenium.webdriver.common.by import By

    from pointalign.demo.app import launch

    ckpt = save_checkpoint(tiny_model, tmp_path / "ckpt", tiny_config, what="full")
    good, bad = tmp_path / "object.npy", tmp_path / "broken.npy"
    np.save(good, clouds(1, 256)[0].numpy())
    np.save(bad, np.zeros((5, 4)))
    port = _free_port()
    app = launch(ckpt, host="127.0.0.1", port=port, data_root=tiny_data, max_upload_mb=5, block=False)
    driver = _driver(tmp_path)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        status = lambda: driver.find_element(By.CSS_SELECTOR, "#status").text  # noqa: E731
        upload = _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]"), what="upload")
        upload.send_keys(str(bad))
        _wait(lambda: "Could not use this file" in status(), what="the bad-upload message")
        assert "expected shape" in status()
        driver.refresh()  # a fresh page: the file box holds the rejected file
        _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]"), what="upload").send_keys(
            str(good)
        )
        _wait(lambda: "Loaded" in status(), what="the upload to load")
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#view .js-plotly-plot"), what="the 3D view")
        box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
        box.send_keys("What is this?")
        driver.find_element(By.CSS_SELECTOR, "#ask").click()
        bots = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#chatbot [data-testid='bot']"), what="an answer")
        assert "What is this?" in driver.find_element(By.CSS_SELECTOR, "#chatbot").text
        assert len(bots) == 1
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"
        keep = os.environ.get("POINTALIGN_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
    finally:
        driver.quit()
        app.close()
