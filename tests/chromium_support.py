"""Headless Chromium for the tests of pages a person looks at (the HTML report, the live view):
a screenshot, and the network requests the page itself made (from Chromium's net log).

Chromium is a Debian package (`apt-get install chromium`); tests that need it skip without it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(Debian: apt-get install chromium; .ci/run installs it where apt works)")

# Chromium's own services (updates, sign-in, spell-check dictionaries) request URLs of their own:
# switched off where a flag exists, and told apart below by their initiator.
_QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps", "--disable-features=Translate,OptimizationHints,MediaRouter"]


@dataclass
class PageLoad:
    screenshot: np.ndarray  # BGR uint8
    page_requests: List[str]  # URLs the page asked the network stack for (file:// loads are not network)


def load(url: str, tmp: Path, size=(1200, 1600), budget_ms: int = 0, timeout_s: float = 60) -> PageLoad:
    """Open `url` headless, screenshot it at `size` (w, h) and list the requests the page made.

    budget_ms: virtual time to let the page run before the shot; needed for a page whose load never
    ends (an MJPEG stream), where the screenshot would otherwise wait for a load event."""
    tmp.mkdir(parents=True, exist_ok=True)
    shot, net = tmp / "screenshot.png", tmp / "netlog.json"
    cmd = [CHROMIUM, *_QUIET, f"--user-data-dir={tmp / 'profile'}", f"--window-size={size[0]},{size[1]}",
           f"--log-net-log={net}", f"--screenshot={shot}"]
    if budget_ms:
        cmd.append(f"--virtual-time-budget={budget_ms}")
    proc = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=timeout_s)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return PageLoad(cv2.imread(str(shot)), _page_requests(net))


def _page_requests(net_log: Path) -> List[str]:
    """URLs of the URL requests whose initiator is a page (Chromium's services have "not an origin")."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


def not_blank(image: np.ndarray) -> bool:
    """More than a flat page: the grey levels vary and at least 2 % of the pixels are not background."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    background = np.bincount(gray.reshape(-1), minlength=256).argmax()
    return float(gray.std()) > 10 and float(np.mean(np.abs(gray.astype(int) - int(background)) > 16)) > 0.02
