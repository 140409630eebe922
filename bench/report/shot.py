"""The report's page as headless Chromium sees it: the checks its load script writes into the page, and a screenshot.

The page's own script (:data:`bench.report.render.PAGE`) writes onto ``<body>``, once loaded: broken images,
console errors, how wide the page is against its window and how tall it is. :func:`page_checks` reads them
back from Chromium's DOM; :func:`screenshot` takes a picture of the whole page, as tall as it is. Both say
why when Chromium is missing or fails instead of raising.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

TALLEST = 16_000  # pixels: a taller page is cut there (Chromium draws no larger surface reliably)


def chromium() -> str | None:
    """The Chromium (or Chrome) on PATH, None without one."""
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _chromium(browser: str, profile: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def page_checks(index_html, width: int = 1000, height: int = 800) -> tuple[dict | None, str | None]:
    """``(attributes, None)``: the ``data-*`` attributes the page's script wrote on ``<body>`` in a window
    ``width`` x ``height`` (``checked``, ``broken-images``, ``errors``, ``page-width``, ``view-width``,
    ``page-height``...), as strings; or ``(None, why)``."""
    browser = chromium()
    if browser is None:
        return None, "Chromium not found (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        try:
            done = _chromium(browser, profile, f"--window-size={width},{height}", "--virtual-time-budget=5000",
                             "--dump-dom", Path(index_html).resolve().as_uri())
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"Chromium did not render the page: {e}"
    body = re.search(r"<body([^>]*)>", done.stdout)
    if body is None:
        return None, f"Chromium gave no page (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1))), None


def screenshot(index_html, png_path, width: int = 1200, height: int | None = None) -> tuple[Path | None, str | None]:
    """A PNG of the page ``width`` pixels wide, as tall as the page (up to :data:`TALLEST`) unless ``height``
    is given: ``(png_path, None)``, or ``(None, why)`` (no Chromium, or it drew nothing)."""
    png = Path(png_path).resolve()
    if height is None:
        checks, why = page_checks(index_html, width)
        if checks is None:
            return None, why
        height = int(checks.get("page-height") or 2000)
    browser = chromium()
    if browser is None:
        return None, "Chromium not found (apt-get install chromium)"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        try:
            done = _chromium(browser, profile, f"--window-size={width},{min(height, TALLEST)}",
                             "--virtual-time-budget=5000", f"--screenshot={png}", Path(index_html).resolve().as_uri())
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"Chromium took no screenshot: {e}"
    if not png.exists() or png.stat().st_size == 0:
        return None, f"Chromium took no screenshot (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return png, None
