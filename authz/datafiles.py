"""Files that live beside the package in a checkout and under <prefix>/share once installed."""

from __future__ import annotations

import sys
from pathlib import Path


def project_file(relative: str) -> Path:
    """The checkout's copy of a project file, else the one a wheel installed.

    Wheels install these via [tool.setuptools.data-files] in pyproject.toml.
    """
    checkout = Path(__file__).resolve().parent.parent / relative
    installed = Path(sys.prefix) / "share" / "distill-guard" / relative
    for path in (checkout, installed):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{relative} not found: neither in the source checkout ({checkout})"
        f" nor installed under sys.prefix ({installed})"
    )
