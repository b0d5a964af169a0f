"""Headless Chromium for the browser-facing HTML (preview gallery, report)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "chromium not installed: apt-get install chromium"


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run Chromium headless with a throwaway profile and no background networking (the
    machine's network is closed; without these flags it retries connections)."""
    assert CHROMIUM is not None, MISSING
    with tempfile.TemporaryDirectory(prefix="outreach-chromium-") as profile:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def screenshot(url: str, target: Path, width: int, height: int) -> Image.Image:
    """Chromium's screenshot of ``url`` at ``width`` × ``height``, saved as ``target`` (PNG)."""
    done = chromium(f"--window-size={width},{height}", f"--screenshot={target}", url)
    assert target.is_file(), done.stderr[-2000:]
    img = Image.open(target)
    img.load()
    assert img.format == "PNG"
    assert img.size == (width, height)
    return img.convert("RGB")
