"""Build hook: wheels get authz/gen compiled from protos/ by the pinned protoc (authz/protogen.py).

All other metadata lives in pyproject.toml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# PEP 517 builds do not put the project on sys.path; the generator lives in the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from authz.protogen import generate


class BuildPyWithProtos(build_py):
    """build_py, then regenerate authz/gen in the build tree from protos/."""

    def run(self) -> None:
        """Copy the package, then replace its generated code with a fresh compile."""
        super().run()
        if not self.editable_mode:  # an editable install uses the committed files in place
            generate(Path(self.build_lib))


setup(cmdclass={"build_py": BuildPyWithProtos})
