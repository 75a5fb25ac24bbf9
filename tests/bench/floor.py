"""The floor of the approach: a bare grpc.aio ext_authz server that allows everything.

No parsing, no verification, no logging per request: one ``CheckResponse`` with
status OK. What a Python gRPC service costs before it does any work, measured
through the same Envoy as authz. Started by the benchmark as

    python -m tests.bench.floor [--listen 127.0.0.1:0]

and prints ``listening on HOST:PORT`` (the line ``authz serve`` prints) once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

__all__ = ["AllowAll", "main"]


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


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.floor", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    args = parser.parse_args()
    return asyncio.run(serve(args.listen))


if __name__ == "__main__":
    sys.exit(main())
