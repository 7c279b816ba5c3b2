"""Regenerate the UI screenshots in docs/screenshots/ from a real run.

    .venv/bin/python scripts/screenshots.py [FOLDER]

Runs the browser test (retl_assets_tests/ui/test_ui_browser.py), which builds a demo-like
project, syncs it, serves it with the Dagster webserver and daemon and looks at it in headless
Chromium; with RETL_SCREENSHOTS set it saves what it looked at. About two minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "retl_assets_tests/ui/test_ui_browser.py"


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshots").resolve()
    env = {**os.environ, "RETL_SCREENSHOTS": str(folder)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           TEST], cwd=ROOT, env=env, check=False)
    if done.returncode == 0:
        print(f"screenshots saved in {folder}:",
              ", ".join(sorted(p.name for p in folder.glob("*.png"))))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
