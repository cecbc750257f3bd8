"""Helpers shared by the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def git_rev() -> str:
    """Short git HEAD of the repository, or "unknown" (informational only)."""
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"
