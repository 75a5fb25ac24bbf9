"""A gRPC health probe for places Kubernetes' own ``grpc:`` probe cannot reach.

Kubernetes probes gRPC health over TCP only. When authz listens on a Unix
domain socket (the sidecar topology), the kubelet runs this as an ``exec``
probe inside the container instead::

    python -m authz.probe unix:/var/run/authz/authz.sock

It is also every topology's liveness probe, over TCP where authz listens on
a port (``python -m authz.probe --alive 127.0.0.1:9001``): an answer needs the
process to run, where a TCP connect is accepted by the kernel even from a
stopped or wedged process.

Where authz serves TLS on its port (``tls`` in its configuration), the
kubelet's ``grpc:`` probe cannot ask it either: it speaks plaintext. Then the
probe connects over TLS, trusting ``--tls-ca`` and checking the name
``--tls-server-name``; when authz requires client certificates, it presents
``--tls-cert``/``--tls-key`` (authz's own certificate, issued for client
authentication too, does)::

    python -m authz.probe --tls-ca /etc/authz-tls/ca.crt \
        --tls-cert /etc/authz-tls/tls.crt --tls-key /etc/authz-tls/tls.key \
        --tls-server-name authz.authz.svc.cluster.local 127.0.0.1:9001

The files are read for each run, so a rotated Secret is used at once.

Exit status: 0 SERVING; 1 answered, but not SERVING; 2 no answer. With
``--alive``, any answer counts (a liveness check: the process is up and its
gRPC server responds, even while it reports NOT_SERVING for want of keys).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz import AUTHORIZATION_SERVICE

__all__ = ["ProbeTls", "main", "probe"]

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_NO_ANSWER = 2

# The probe asks this pod's own process: never through a proxy. gRPC would
# otherwise take grpc_proxy/https_proxy/http_proxy from the environment, which
# a pod may well set for its key fetches, and a liveness probe through a proxy
# that cannot reach the pod's loopback would restart a healthy process.
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


@dataclass(frozen=True)
class ProbeTls:
    """How to reach a TLS listener: the CA to trust, the name to expect, and a
    client certificate when the listener requires one."""

    ca_file: Path
    server_name: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def channel(self, target: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=self.key_file.read_bytes() if self.key_file else None,
            certificate_chain=self.cert_file.read_bytes() if self.cert_file else None,
        )
        options: list[tuple[str, str | int]] = [*_CHANNEL_OPTIONS]
        if self.server_name is not None:
            # The target is an address (127.0.0.1:9001); the certificate names the Service.
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(target, credentials, options=options)


def probe(
    target: str,
    service: str = AUTHORIZATION_SERVICE,
    timeout: float = 1.0,
    tls: ProbeTls | None = None,
) -> str:
    """The health status name at ``target`` (e.g. ``SERVING``); grpc.RpcError without answer."""
    if tls is None:
        opened = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
    else:
        opened = tls.channel(target)
    with opened as channel:
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
    parser.add_argument("--tls-ca", type=Path, help="connect over TLS, trusting this CA (PEM)")
    parser.add_argument("--tls-server-name", help="the name the server's certificate must carry")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM), with --tls-key")
    parser.add_argument("--tls-key", type=Path, help="client certificate's private key (PEM)")
    args = parser.parse_args(argv)
    tls = _tls(parser, args)
    try:
        status = probe(args.target, args.service, args.timeout, tls)
    except OSError as exc:  # a TLS file missing or unreadable: no answer can be had
        print(f"{args.target}: no answer ({exc})", file=sys.stderr)
        return EXIT_NO_ANSWER
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        print(f"{args.target}: no answer ({code})", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(f"{args.target}: {status}")
    if status == "SERVING" or args.alive:
        return EXIT_SERVING
    return EXIT_NOT_SERVING


def _tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ProbeTls | None:
    others = (args.tls_server_name, args.tls_cert, args.tls_key)
    if args.tls_ca is None:
        if any(value is not None for value in others):
            parser.error("--tls-server-name, --tls-cert and --tls-key need --tls-ca")
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return ProbeTls(args.tls_ca, args.tls_server_name, args.tls_cert, args.tls_key)


if __name__ == "__main__":
    raise SystemExit(main())
