"""A sample upstream service that answers with what it received, as JSON.

It shows what reached the service behind Envoy: the identity headers authz set,
and proof that forged ones did not get through.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["EchoUpstream", "main"]


class _EchoHandler(BaseHTTPRequestHandler):
    server_version = "sample-upstream"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {name.lower(): value for name, value in self.headers.items()},
            }
        ).encode()
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
        self._server = ThreadingHTTPServer((host, port), _EchoHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> EchoUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


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
