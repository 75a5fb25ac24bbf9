"""A sample upstream service that answers with what it received, as JSON.

It shows what reached the service behind Envoy: the identity headers authz set,
and proof that forged ones did not get through.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authz.dev.loopback import LoopbackServer

__all__ = ["EchoUpstream", "main"]


# Requests kept for received(); bounded, as the example services in k8s/ run this.
KEPT = 1000


class _EchoServer(ThreadingHTTPServer):
    """Keeps what it received, so a test can show that a request never arrived."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _EchoHandler)
        self.lock = threading.Lock()
        self.received: deque[dict[str, Any]] = deque(maxlen=KEPT)


class _EchoHandler(BaseHTTPRequestHandler):
    server_version = "sample-upstream"
    server: _EchoServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        request = {
            "method": self.command,
            # The request-target exactly as sent: http.server rewrites a leading "//".
            "path": self.requestline.split(" ")[1] if " " in self.requestline else self.path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
        }
        with self.server.lock:
            self.server.received.append(request)
        body = json.dumps(request).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: Envoy's access log already records each request."""


class EchoUpstream:
    """The echo service on 127.0.0.1, in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _EchoServer((host, port))
        self._loop = LoopbackServer(server=self._server)

    @property
    def port(self) -> int:
        return self._loop.port

    def received(self) -> list[dict[str, Any]]:
        """The requests answered so far (method, path, headers), oldest first; the
        last ``KEPT`` of them."""
        with self._server.lock:
            return list(self._server.received)

    def start(self) -> EchoUpstream:
        self._loop.start()
        return self

    def stop(self) -> None:
        self._loop.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the example services in k8s/ run this."""
    parser = argparse.ArgumentParser(prog="python -m authz.dev.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    upstream = EchoUpstream(args.host, args.port).start()
    print(f"echo upstream listening on {args.host}:{upstream.port}", flush=True)
    stop.wait()
    upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
