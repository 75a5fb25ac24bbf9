"""Build hook: compile protos/ into authz/_proto before the package is built."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "protos"))


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        from compile_protos import generate

        generate(HERE)
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
