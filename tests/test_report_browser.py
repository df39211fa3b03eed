"""The analysis report in a real headless browser: it loads offline without console errors, draws every
point, and hovering a point shows its rendered frame, task and value.

Needs Playwright (the `dev` extra) and a Chromium (Debian's `chromium` package; `MTDQN_CHROMIUM` overrides
the path). Skipped when either is missing, unless MTDQN_REQUIRE_BROWSER=1 (CI sets it), then it fails.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import small_config

from mtdqn.cli import main
from mtdqn.train import Trainer

REQUIRED = os.environ.get("MTDQN_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("MTDQN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if CHROMIUM is None:
        if REQUIRED:
            pytest.fail("no chromium found; install Debian's chromium package or set MTDQN_CHROMIUM")
        pytest.skip("no chromium found")
    return sync_playwright


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    Trainer.create(small_config(epochs=1), root / "run", progress=False).run()
    assert (
        main(["analyze", str(root / "run"), "--steps", "60", "--method", "pca", "--out", str(root / "an")])
        == 0
    )
    return root / "an"


def test_report_loads_draws_every_point_and_shows_the_state_on_hover(report):
    from PIL import Image

    sync_playwright = _browser_or_skip()
    metrics = json.loads((report / "metrics.json").read_text())
    n_states = metrics["n_states"]
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((report / "report.html").as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        canvas = page.locator("#embedding")
        assert canvas.get_attribute("data-points-drawn") == str(n_states)
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
        coloured = (np.abs(shot - shot[..., :1]).max(axis=-1) > 40).mean()  # non-grey pixels: the points
        assert coloured > 0.002, coloured
        box = canvas.bounding_box()
        for row in (0, n_states // 2, n_states - 1):
            point = page.evaluate(f"window.mtdqnPoint({row})")
            page.mouse.move(box["x"] + point["x"], box["y"] + point["y"])
            tip = page.locator("#tooltip")
            tip.wait_for(state="visible", timeout=5_000)
            hovered = int(tip.get_attribute("data-row"))
            text = page.locator("#tip-text").inner_text()
            task = metrics["tasks"][hovered // (n_states // len(metrics["tasks"]))]
            assert task in text and "V = " in text
            ink = page.evaluate(
                "(() => { const c = document.getElementById('thumb');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let k = 0; for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] < 600) k++;"
                " return k; })()"
            )
            assert ink > 20, f"the hover picture of state {hovered} is blank"
        page.check("input[value=value]")  # recolour by value: still every point
        assert canvas.get_attribute("data-points-drawn") == str(n_states)
        browser.close()
    assert errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
