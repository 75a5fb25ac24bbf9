"""A gRPC health probe for places Kubernetes' own ``grpc:`` probe cannot reach.

Kubernetes probes gRPC health over TCP only. When authz listens on a Unix
domain socket (the sidecar topology), the kubelet runs this as an ``exec``
probe inside the container instead::

    python -m authz.probe unix:/var/run/authz/authz.sock

It is also every topology's liveness probe, over TCP where authz listens on
a port (``python -m authz.probe --alive 127.0.0.1:9001``): an answer needs the
process to run, where a TCP connect is accepted by the kernel even from a
stopped or wedged process.

Exit status: 0 SERVING; 1 answered, but not SERVING; 2 no answer. With
``--alive``, any answer counts (a liveness check: the process is up and its
gRPC server responds, even while it reports NOT_SERVING for want of keys).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz import AUTHORIZATION_SERVICE

__all__ = ["main", "probe"]

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_NO_ANSWER = 2

# The probe asks this pod's own process: never through a proxy. gRPC would
# otherwise take grpc_proxy/https_proxy/http_proxy from the environment, which
# a pod may well set for its key fetches, and a liveness probe through a proxy
# that cannot reach the pod's loopback would restart a healthy process.
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def probe(target: str, service: str = AUTHORIZATION_SERVICE, timeout: float = 1.0) -> str:
    """The health status name at ``target`` (e.g. ``SERVING``); grpc.RpcError without answer."""
    with grpc.insecure_channel(target, options=_CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m authz.probe", description=__doc__)
    parser.add_argument("target", help="unix:/path/to.sock or HOST:PORT")
    parser.add_argument("--service", default=AUTHORIZATION_SERVICE, help="health service name")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds (default 1)")
    parser.add_argument("--alive", action="store_true", help="any answer is a success")
    args = parser.parse_args(argv)
    try:
        status = probe(args.target, args.service, args.timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        print(f"{args.target}: no answer ({code})", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(f"{args.target}: {status}")
    if status == "SERVING" or args.alive:
        return EXIT_SERVING
    return EXIT_NOT_SERVING


if __name__ == "__main__":
    raise SystemExit(main())
