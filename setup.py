"""Build hook: compile protos/ into authz/_proto before the package is built."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "protos"))


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        from compile_protos import generate

        generate(HERE)
        # The package list was computed before the code existed: add it now.
        generated = find_packages(str(HERE), include=["authz._proto", "authz._proto.*"])
        self.packages = sorted({*(self.packages or []), *generated})
        self.distribution.packages = self.packages
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
