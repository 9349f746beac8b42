"""The documentation site builds with ``mkdocs build --strict``: no warnings (broken links,
docstrings griffe cannot parse, parameters documented but not in the signature, ...).

Needs the ``docs`` extra (mkdocs, mkdocs-material, mkdocstrings[python]); without it the test
is skipped, except on CI (``CI`` set to ``true`` or ``1``), where it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# module -> distribution that provides it
REQUIRED = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocstrings": "mkdocstrings",
    "mkdocstrings_handlers.python": "mkdocstrings[python]",
}


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def _missing() -> list[str]:
    missing = []
    for module, dist in REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is absent
            found = False
        if not found:
            missing.append(dist)
    return missing


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = _missing()
    if missing:
        reason = f"docs extra missing ({', '.join(missing)}); pip install -e '.[docs]'"
        if _on_ci():
            pytest.fail(f"{reason}: CI must build the documentation.", pytrace=False)
        pytest.skip(reason)
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        str(tmp_path / "site"),
        "--config-file",
        str(ROOT / "mkdocs.yml"),
    ]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
    if result.returncode != 0 or warnings:
        shown = "\n".join(warnings) if warnings else output[-4000:]
        pytest.fail(
            f"mkdocs build --strict failed (exit {result.returncode}), "
            f"{len(warnings)} warning(s):\n{shown}",
            pytrace=False,
        )
