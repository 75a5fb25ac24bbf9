"""A small HTTP server on 127.0.0.1 (any free port), served from a daemon thread:
the demo's receivers and the tests' stand-ins are each one handler on it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["LoopbackServer", "QuietHandler"]


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that logs nothing and answers with one call."""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests and the demo say what matters."""

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer:
    """``handler`` on its own server, or a prepared ``server`` (another address, state)."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler] | None = None,
        *,
        server: ThreadingHTTPServer | None = None,
    ) -> None:
        if server is None:
            assert handler is not None
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server = server
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
