"""The checkout the tests run in: files outside the package (docs, k8s/, envoy/, protos/)."""

from pathlib import Path

__all__ = ["REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
