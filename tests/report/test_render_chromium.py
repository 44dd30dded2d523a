"""Render reports with headless Chromium (skipped when no chromium is on PATH).

The screenshot must be a real page: the right size, many colours (text, plots), and the
verdict banner's background colour over a large area (it is the first thing a reader sees).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report.fakes import classification_metrics, make_run
from transferkit.report import write_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BROWSER is None,
        reason="chromium (or chromium-browser) is not on PATH; "
        "scripts/check_report_render.sh installs it",
    ),
]
REPO = Path(__file__).resolve().parents[2]
BANNER_BG = {"positive": (236, 253, 243), "negative": (254, 242, 242)}  # CSS --pos-bg/--neg-bg


def _screenshot(html: Path, png: Path, profile: Path) -> Image.Image:
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1200,2000",
        html.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = Image.open(png)
    img.load()
    return img


def _colour_codes(img: Image.Image) -> np.ndarray:
    """Each pixel's RGB packed into one integer, ``[H, W]``."""
    a = np.asarray(img.convert("RGB")).astype(np.uint32)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def _banner_pixels(codes: np.ndarray, verdict: str) -> int:
    r, g, b = BANNER_BG[verdict]
    return int((codes == (r << 16 | g << 8 | b)).sum())


def _check_page(img: Image.Image, verdict: str) -> None:
    assert img.size == (1200, 2000)
    codes = _colour_codes(img)
    assert len(np.unique(codes)) > 200  # text, tables and plots, not a blank page
    # the verdict banner is near the top of the page and large
    banner = _banner_pixels(codes[:500], verdict)
    assert banner > 1000 * 60, f"verdict banner colour covers only {banner} px at the top"


@pytest.mark.parametrize(
    ("verdict", "delta", "ci"),
    [("positive", 0.11, (0.06, 0.16)), ("negative", -0.05, (-0.08, -0.02))],
)
def test_report_renders_in_chromium(
    tmp_path: Path, verdict: str, delta: float, ci: tuple[float, float]
) -> None:
    m = classification_metrics(delta=delta, ci=ci, verdict=verdict)
    run = make_run(tmp_path, "full", metrics=m)
    img = _screenshot(write_report(run), tmp_path / "shot.png", tmp_path / "profile")
    _check_page(img, verdict)
    other = "negative" if verdict == "positive" else "positive"
    assert _banner_pixels(_colour_codes(img), other) < 1000  # colour follows the verdict


def test_check_report_render_script(tmp_path: Path) -> None:
    run = make_run(tmp_path, "full")  # no report.html yet: the script writes it
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_report_render.sh"), str(run)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=True,
    )
    png = Path(res.stdout.strip().splitlines()[-1])
    assert png == run / "report.png" and (run / "report.html").is_file()
    img = Image.open(png)
    img.load()
    _check_page(img, "positive")
