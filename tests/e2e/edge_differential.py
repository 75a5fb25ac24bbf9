"""Differential testing of authz's reading of paths and hosts against the real Envoy.

Generated requests (a hostile alphabet) go through Envoy, configured as the
shipped gateway, to authz and the echo upstream. Each request is sent on its
own connection exactly as generated (raw bytes, no client-side quoting), and
carries a unique marker: in the Host header when the path is under test, in
the path when the host is. Afterwards each request's three views are joined:
what the client got, authz's audit record (what Envoy asked authz about and
what authz decided) and, for a 200, what the upstream received (the echo
body).
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.dev.stack import wait_for

__all__ = ["Outcome", "Probe", "hosts", "paths", "send_all"]

# Pieces a path is built from: separators, dot segments plain and encoded,
# escapes of every kind (encoded separators, NUL, double and nested
# encoding, malformed, non-UTF-8), ";" parameters, characters Envoy escapes,
# raw non-ASCII, escapes of look-alikes (what NFKC makes ".", "/" or "a"),
# invisible and dotless-i characters, and the names of the routes under test.
PATH_PIECES = (
    *("/", "/", "/", "//", "\\", "%2f", "%2F", "%5c", "%5C"),
    *(".", "..", "...", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "..;", ".;", ";", ";x=1"),
    *("%00", "%01", "%0a", "%7f", "%20", "%25", "%252e", "%%30", "%%300", "%", "%2", "%zz"),
    *("%41", "%61dmin", "%7e", "%7E", "%3f", "%3F", "%23", "%c3%a9", "%C3%A9", "%c0%ae"),
    *("%e9", "%ff", "é", "ü/", "\u2024", "~", "-", "_", "'", "[", "]", "@", ":", "!", "$"),
    *("&", "(", ")", "*", "+", ",", "=", "{", "}", "|", "^", "`", '"', "<", ">"),
    *("?", "?x=/../admin", "#", " ", "\t"),
    *("%EF%BC%8E", "%ef%bc%8e%EF%BC%8E", "%EF%BC%8F", "%E2%80%A4", "%E2%80%A5", "%EF%B9%92"),
    *("%EF%BD%81dmin", "%E2%80%8B", "%C2%A0", "%C4%B1", "adm%C4%B1n", "cafe%CC%81"),
    *("admin", "admin", "Admin", "ADMIN", "caf%C3%A9", "café", "docs", "x", "healthz"),
)


def paths(count: int, seed: int) -> list[str]:
    """``count`` generated paths; the same ``seed`` gives the same paths."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(count):
        pieces = [rng.choice(PATH_PIECES) for _ in range(rng.randint(1, 9))]
        path = "".join(pieces)
        if rng.random() < 0.9 and not path.startswith("/"):
            path = "/" + path
        if rng.random() < 0.02:  # very long: past the audit record's field cap
            path = "/" + "/".join(rng.choice(("a", "..", ".", "")) for _ in range(900)) + path
        out.append(path)
    return out


HOST_NAMES = ("admin.shop.local", "ADMIN.Shop.Local", "shop.local", "other.test", "127.0.0.1")
HOST_PIECES = (
    *("", "", ".", "..", ":", ":80", ":8080", ":0", ":65535", ":65536", ":abc", ":8o", ": 80"),
    *("@", "evil@", "user:pw@", "%2e", "%41", "_", "-", "*", "[", "]", "[::1]", "[::1]:80"),
    *(" ", "\t", "é", ",", ";", "/", "\\", "?", "#", "\u0130"),
)


def hosts(count: int, seed: int) -> list[str]:
    """``count`` generated Host values built around a protected host name."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(count):
        before = rng.choice(HOST_PIECES) if rng.random() < 0.3 else ""
        name = rng.choice(HOST_NAMES)
        after = "".join(rng.choice(HOST_PIECES) for _ in range(rng.randint(0, 2)))
        out.append(before + name + after)
    return out


@dataclass
class Probe:
    """One request: what was sent, and how to find it again."""

    marker: str
    path: str
    host: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    probe: Probe
    status: int  # 0: Envoy closed the connection without an answer
    body: bytes
    headers: dict[str, str]
    audit: dict[str, Any] | None = None

    @property
    def from_authz(self) -> bool:
        """authz answered (a deny carries its challenge or its JSON body)."""
        return "www-authenticate" in self.headers or self.body.startswith(b'{"error"')

    @property
    def upstream(self) -> dict[str, Any] | None:
        """What the echo upstream received, for a request it answered."""
        if self.status != 200 or not self.body.startswith(b"{"):
            return None
        echoed: dict[str, Any] = json.loads(self.body)
        return echoed if "path" in echoed else None


def _exchange(port: int, probe: Probe) -> tuple[int, bytes, dict[str, str]]:
    headers = "".join(f"{name}: {value}\r\n" for name, value in probe.headers)
    request = (
        f"{probe.method} {probe.path} HTTP/1.1\r\nHost: {probe.host}\r\n{headers}"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("utf-8", "surrogateescape")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        return _read_response(conn)


def _read_response(conn: socket.socket) -> tuple[int, bytes, dict[str, str]]:
    """One response, read to its length: after a local reply Envoy waits for the
    client to close first, so reading to EOF would wait out its delayed close."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = conn.recv(65536)
        if not chunk:
            return 0, b"", {}
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        return 0, b"", {}
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    while (length >= 0 and len(body) < length) or (chunked and not body.endswith(b"0\r\n\r\n")):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    if chunked:
        body = _unchunk(body)
    return int(lines[0].split()[1]), body, headers


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def send_all(
    port: int,
    probes: Iterable[Probe],
    audit_log: Path,
    key: Callable[[dict[str, Any]], str],
    authz_log: Path,
) -> list[Outcome]:
    """Send every probe through Envoy; join each answer with its audit record.

    ``key`` reads a probe's marker from an audit record. Every answer that came
    from authz or the upstream must have its record: they are awaited (polled).
    """
    probes = list(probes)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda probe: _exchange(port, probe), probes))
    outcomes = [Outcome(probe, *answer) for probe, answer in zip(probes, answers, strict=True)]
    wanted = {o.probe.marker for o in outcomes if o.from_authz or o.upstream is not None}

    def records() -> dict[str, dict[str, Any]] | None:
        lines = audit_log.read_text(errors="replace").split("\n")[:-1]
        found = {}
        for line in lines:
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("type") == "decision":
                    found[key(record)] = record
        return found if wanted <= found.keys() else None

    found = wait_for("an audit record for every answered probe", records, 60, authz_log)
    for outcome in outcomes:
        outcome.audit = found.get(outcome.probe.marker)
    return outcomes
