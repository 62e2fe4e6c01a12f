"""Headless Chromium for the browser tests: Debian's ``chromium`` package, installed on first use.

Playwright's own browser download does not work here (no access to its CDN), so the tests drive the
system Chromium through Playwright's Python package. When ``/usr/bin/chromium`` is missing and we are
root on Debian/Ubuntu, ``ensure_chromium`` installs it with apt-get (CI runs the same command up front).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path(os.environ.get("SEMCOLOR_CHROMIUM", "/usr/bin/chromium"))
INSTALL_COMMAND = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium(timeout_s: int = 900) -> Path:
    """The Chromium executable, installing the Debian package first if it is missing.

    Raises RuntimeError (with the command to run by hand) when it is missing and cannot be installed."""
    if CHROMIUM.is_file():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{CHROMIUM} is missing and cannot be installed from here; "
                           f"run as root: {INSTALL_COMMAND}")
    done = subprocess.run(["bash", "-c", INSTALL_COMMAND], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not CHROMIUM.is_file():
        raise RuntimeError(f"installing chromium failed ({INSTALL_COMMAND}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return CHROMIUM


def launch(playwright):
    """A headless Chromium browser (Playwright ``Browser``) on the system executable."""
    return playwright.chromium.launch(executable_path=str(ensure_chromium()), args=LAUNCH_ARGS, headless=True)
