"""How the server serves: its worker threads and pending bound, and TLS on its listener.

Both are fixed at start (the listener and the pool exist once): a reload that
changes either is refused (reloader.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from authz.config.base import Model, PathModel

__all__ = ["ListenTlsConfig", "ServingConfig"]


class ListenTlsConfig(PathModel):
    """TLS on the gRPC listener: Envoy's Checks (and the tokens in them) encrypted
    on the pod network, and with ``client_ca_file`` only clients holding a
    certificate from that CA (Envoy) may ask. The files are re-read when they
    change (a rotated Secret), for every new connection; the section itself
    changes only on restart."""

    PATH_KEYS = ("cert_file", "key_file", "client_ca_file")

    cert_file: Path
    key_file: Path
    # Require and verify client certificates issued by this CA (mutual TLS).
    client_ca_file: Path | None = None


class ServingConfig(Model):
    """How Checks are served: gRPC's worker threads and the bound on waiting Checks.

    A Check is decided on one of ``threads`` threads (``grpc.server``); one that
    arrives while ``max_pending_checks`` are queued or being decided is refused
    at once with RESOURCE_EXHAUSTED, which Envoy answers with its
    ``status_on_error``. Fixed at start: a reload that changes them is refused.
    """

    # The decision is CPU work under one interpreter lock: more threads than a
    # few only add switching (docs/performance.md has the sweep).
    threads: int = Field(default=4, ge=1, le=256)
    # At ~3,000 Checks/s per process, 256 waiting is under 100 ms of queue:
    # well inside Envoy's 250 ms timeout, so what is taken is answered in time.
    max_pending_checks: int = Field(default=256, ge=1, le=100_000)
