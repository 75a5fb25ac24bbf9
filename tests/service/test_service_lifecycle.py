"""Health, graceful shutdown, listening on TCP and unix sockets, bind failures."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2

from authz.errors import ConfigError
from tests.service.svc_helpers import (
    ISSUER,
    NOT_SERVING,
    REALM,
    SERVICE_NAME,
    SERVING,
    WAIT,
    Client,
    ConfigFactory,
    GatedClock,
    LoopThread,
    NoKeys,
    RunningServer,
    ServerFactory,
    Signing,
    body,
    check_request,
    deny_headers,
    metadata,
    ok_headers,
)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- health ----------------------------------------------------------------


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_health_is_serving_after_start(client: Client, service: str) -> None:
    assert client.health(service) == SERVING


def test_health_of_an_unknown_service_is_not_found(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.health("no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_without_keys_health_is_not_serving_and_checks_deny_503(
    start_server: ServerFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    keys = NoKeys()
    running = start_server(make_config(), keys=keys)
    client = running.client

    assert client.health("") == NOT_SERVING
    assert client.health(SERVICE_NAME) == NOT_SERVING

    response = client.check(check_request(bearer(signing.token())), timeout=WAIT)
    assert response.status.code == code_pb2.UNAVAILABLE
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.denied_response.status.code == 503
    assert metadata(response)["reason"] == "keys_unavailable"
    assert metadata(response)["decision"] == "deny"
    # No RFC 6750 challenge for an outage: the client did nothing wrong.
    assert "www-authenticate" not in deny_headers(response)
    assert body(response) == {
        "error": "unavailable",
        "error_description": "Authorization is temporarily unavailable",
    }
    assert keys.asked == [ISSUER]


# --- graceful shutdown -----------------------------------------------------


def test_graceful_shutdown_finishes_in_flight_check_and_reports_not_serving(
    start_server: ServerFactory,
    make_config: ConfigFactory,
    loop_thread: LoopThread,
    signing: Signing,
) -> None:
    """stop() while a Check is inside its handler.

    Check has no await point, so the GatedClock holds the server's event loop
    while the handler runs: stop() is *requested* (queued on the loop) during
    the Check, and starts as soon as the handler lets go of the loop, while the
    Check's answer is still on its way. A health Watch opened beforehand is an
    in-flight RPC too: it must see NOT_SERVING while stop() is still draining
    (it cannot have finished: the Watch is still open).
    """
    clock = GatedClock()
    running = start_server(make_config(grace_period_seconds=30), clock=clock)
    client = running.client
    with client.watch() as watch:
        assert watch.next_status() == SERVING

        in_flight = client.check.future(check_request(bearer(signing.token("alice"))), timeout=WAIT)
        try:
            assert clock.entered.wait(WAIT), "the Check never reached the clock"
            # The loop is held inside Check: nothing can have been answered yet.
            assert not in_flight.done()
            stopping = loop_thread.submit(running.server.stop(5.0))
        finally:
            clock.release.set()

        response = in_flight.result(timeout=WAIT)
        assert clock.released_in_time is True
        assert response.status.code == code_pb2.OK
        assert ok_headers(response)["x-auth-subject"] == "alice"

        assert watch.next_status() == NOT_SERVING
        assert not stopping.done(), "stop() returned while a Watch was still open"
    # Closing the last in-flight RPC ends the drain well before the 5 s grace.
    stopping.result(timeout=WAIT)

    with pytest.raises(grpc.RpcError) as caught:
        client.check(check_request(bearer(signing.token())), timeout=WAIT)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_stop_grace_bounds_the_drain(
    start_server: ServerFactory, make_config: ConfigFactory, loop_thread: LoopThread
) -> None:
    # An RPC that never ends (a health Watch) is cut off after stop(grace),
    # not after the configured 30 s.
    running = start_server(make_config(grace_period_seconds=30))
    with running.client.watch() as watch:
        assert watch.next_status() == SERVING
        started = time.monotonic()
        loop_thread.run(running.server.stop(0.3), timeout=WAIT)
        elapsed = time.monotonic() - started
        assert watch.next_status() == NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            watch.next_status()
    # The server cuts the stream with GOAWAY "Cancelling all calls".
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    assert 0.25 <= elapsed < 5


def test_stop_without_grace_uses_the_configured_grace_period(
    start_server: ServerFactory, make_config: ConfigFactory, loop_thread: LoopThread
) -> None:
    running = start_server(make_config(grace_period_seconds=0.4))
    with running.client.watch() as watch:
        assert watch.next_status() == SERVING
        started = time.monotonic()
        loop_thread.run(running.server.stop(), timeout=WAIT)
        elapsed = time.monotonic() - started
    # Drained for the configured period (an in-flight RPC was open), and no longer.
    assert 0.35 <= elapsed < 5


# --- unix sockets ----------------------------------------------------------


def test_serves_on_a_unix_socket(
    start_server: ServerFactory, make_config: ConfigFactory, signing: Signing, short_dir: Path
) -> None:
    path = short_dir / "authz.sock"
    running = start_server(make_config(listen=f"unix:{path}"))

    assert running.server.address == f"unix:{path}"
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert running.client.health(SERVICE_NAME) == SERVING
    response = running.client.check(check_request(bearer(signing.token("alice"))), timeout=WAIT)
    assert response.status.code == code_pb2.OK
    assert ok_headers(response)["x-auth-subject"] == "alice"


def test_a_stale_unix_socket_is_replaced(
    start_server: ServerFactory, make_config: ConfigFactory, signing: Signing, short_dir: Path
) -> None:
    path = short_dir / "authz.sock"
    # What a crashed previous instance leaves behind: a socket file nobody listens on.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    assert stat.S_ISSOCK(path.lstat().st_mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(WAIT)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(str(path))

    running = start_server(make_config(listen=f"unix:{path}"))

    assert stat.S_ISSOCK(path.lstat().st_mode)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(WAIT)
        probe.connect(str(path))  # someone listens now
    response = running.client.check(check_request(bearer(signing.token())), timeout=WAIT)
    assert response.status.code == code_pb2.OK


def test_a_regular_file_at_the_socket_path_is_not_removed(
    start_server: ServerFactory,
    make_config: ConfigFactory,
    loop_thread: LoopThread,
    short_dir: Path,
) -> None:
    path = short_dir / "authz.sock"
    path.write_text("precious")
    server = start_server.create(make_config(listen=f"unix:{path}"))

    with pytest.raises(ConfigError, match="exists and is not a socket"):
        loop_thread.run(server.start())
    assert path.read_text() == "precious"


def test_second_server_on_a_live_unix_socket_fails_with_config_error(
    start_server: ServerFactory,
    make_config: ConfigFactory,
    loop_thread: LoopThread,
    short_dir: Path,
) -> None:
    path = short_dir / "authz.sock"
    first = start_server(make_config(listen=f"unix:{path}"))
    second = start_server.create(make_config(listen=f"unix:{path}"))
    error: ConfigError | None = None
    try:
        loop_thread.run(second.start())
    except ConfigError as exc:
        error = exc
    else:
        loop_thread.run(second.stop(0))
        pytest.fail("a second server started on a unix socket that is in use")
    assert str(error).startswith(f"listen unix:{path}: ")
    # The first server keeps its socket.
    assert path.exists()
    assert first.client.health(SERVICE_NAME) == SERVING


@pytest.mark.parametrize(
    "directory",
    ["missing-dir", "x" * 120],
    ids=["missing-directory", "path-too-long"],
)
def test_unusable_unix_socket_path_fails_with_config_error(
    start_server: ServerFactory,
    make_config: ConfigFactory,
    loop_thread: LoopThread,
    short_dir: Path,
    directory: str,
) -> None:
    if directory != "missing-dir":
        # It exists: only the path's length (> 107 bytes) is wrong.
        (short_dir / directory).mkdir()
    listen = f"unix:{short_dir / directory / 'authz.sock'}"
    server = start_server.create(make_config(listen=listen))
    with pytest.raises(ConfigError, match="cannot bind") as caught:
        loop_thread.run(server.start())
    assert str(caught.value).startswith(f"listen {listen}: cannot bind")


# --- bind failures ---------------------------------------------------------


def test_second_server_on_a_taken_port_fails_with_config_error(
    server: RunningServer,
    start_server: ServerFactory,
    make_config: ConfigFactory,
    loop_thread: LoopThread,
    signing: Signing,
) -> None:
    listen = f"127.0.0.1:{server.server.port}"
    assert server.server.port > 0
    second = start_server.create(make_config(listen=listen))

    with pytest.raises(ConfigError, match="cannot bind") as caught:
        loop_thread.run(second.start())
    assert listen in str(caught.value)
    # The first server is untouched and still answers.
    assert server.client.health(SERVICE_NAME) == SERVING
    response = server.client.check(check_request(bearer(signing.token())), timeout=WAIT)
    assert response.status.code == code_pb2.OK


def test_port_taken_by_another_program_fails_with_config_error(
    start_server: ServerFactory, make_config: ConfigFactory, loop_thread: LoopThread
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        server = start_server.create(make_config(listen=f"127.0.0.1:{port}"))
        with pytest.raises(ConfigError, match="cannot bind"):
            loop_thread.run(server.start())


def test_realm_in_challenge_comes_from_config(
    start_server: ServerFactory, make_config: ConfigFactory
) -> None:
    assert REALM != "orders"
    running = start_server(make_config(realm="orders"))
    response = running.client.check(check_request({}), timeout=WAIT)
    assert deny_headers(response)["www-authenticate"] == 'Bearer realm="orders"'


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback")
def test_serves_on_ipv6_loopback(
    start_server: ServerFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    running = start_server(make_config(listen="[::1]:0"))
    assert running.server.port > 0
    assert running.server.address == f"[::1]:{running.server.port}"
    response = running.client.check(check_request(bearer(signing.token())), timeout=WAIT)
    assert response.status.code == code_pb2.OK
