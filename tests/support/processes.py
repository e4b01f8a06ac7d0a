"""Running the project's scripts (scripts/bench, scripts/chaos) from tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, timeout_s: float) -> tuple[int, str, str]:
    """Run `python -m scripts.NAME` from the project root with this interpreter, as the
    executable scripts/NAME does: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", f"scripts.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr
