"""The floors of the approach: bare ext_authz servers that allow everything.

No parsing, no verification, no logging per request: one ``CheckResponse`` with
status OK. What a Python gRPC service costs before it does any work, measured
through the same Envoy as authz, on either of gRPC's Python servers:

- ``grpc.aio`` (the default): an asyncio server, the handler a coroutine;
- ``--sync``: ``grpc.server`` with a pool of ``--threads`` threads (4, as
  authz ships), the handler a plain function: the server authz runs on.

Started by the benchmark as

    python -m tests.bench.floor [--listen 127.0.0.1:0] [--sync [--threads 4]]

and prints ``listening on HOST:PORT`` (the line ``authz serve`` prints) once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

__all__ = ["AllowAll", "SyncAllowAll", "main"]


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self) -> None:
        self._answer = external_auth_pb2.CheckResponse()
        self._answer.status.code = 0
        self._answer.ok_response.SetInParent()

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[
            external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse
        ],
    ) -> external_auth_pb2.CheckResponse:
        return self._answer


class SyncAllowAll(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self) -> None:
        self._answer = AllowAll()._answer

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return self._answer


async def serve(listen: str) -> int:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # The generated *_pb2_grpc module carries no type hints.
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(  # type: ignore[no-untyped-call]
        AllowAll(), server
    )
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"floor: listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1.0)
    return 0


def serve_sync(listen: str, threads: int) -> int:
    pool = ThreadPoolExecutor(threads)
    server = grpc.server(pool, options=[("grpc.so_reuseport", 0)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(  # type: ignore[no-untyped-call]
        SyncAllowAll(), server
    )
    port = server.add_insecure_port(listen)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    print(f"floor: listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stopping.wait()
    server.stop(1.0).wait()
    pool.shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.floor", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    parser.add_argument("--sync", action="store_true", help="grpc.server, not grpc.aio")
    parser.add_argument("--threads", type=int, default=4, help="--sync: the pool's threads")
    args = parser.parse_args()
    if args.sync:
        return serve_sync(args.listen, args.threads)
    return asyncio.run(serve(args.listen))


if __name__ == "__main__":
    sys.exit(main())
