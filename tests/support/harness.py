"""A real grpc.aio server's test harness: an event loop thread and a typed client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

__all__ = ["WAIT", "Client", "HealthWatch", "LoopThread"]

# Upper bound for any single blocking wait in tests (seconds). Waits end on
# their condition; the bound only matters on a failure, and covers a child
# process importing grpc and OpenTelemetry on a CI machine with every core busy.
WAIT = 30.0
T = TypeVar("T")
CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="authz-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        async def _drain() -> None:
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            self.run(_drain())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
            assert not self._thread.is_alive(), "event loop thread did not stop"
            self.loop.close()


@dataclass
class Client:
    """A synchronous channel with typed Check and health callables."""

    channel: grpc.Channel
    check: grpc.UnaryUnaryMultiCallable[CheckRequest, CheckResponse] = field(init=False)
    health_check: grpc.UnaryUnaryMultiCallable[Any, Any] = field(init=False)
    health_watch: Any = field(init=False)

    def __post_init__(self) -> None:
        # The generated *_pb2_grpc module carries no type hints.
        stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)  # type: ignore[no-untyped-call]
        self.check = stub.Check
        health = health_pb2_grpc.HealthStub(self.channel)
        self.health_check = health.Check
        self.health_watch = health.Watch

    @classmethod
    def connect(cls, target: str) -> Client:
        channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(channel).result(timeout=WAIT)
        except BaseException:
            channel.close()
            raise
        return cls(channel)

    def health(self, service: str = "", timeout: float = WAIT) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        response = self.health_check(request, timeout=timeout)
        status: int = response.status
        return status

    def watch(self, service: str = "") -> HealthWatch:
        """A health Watch stream: an RPC that stays in flight until cancelled."""
        call = self.health_watch(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
        return HealthWatch(call)

    def close(self) -> None:
        self.channel.close()


class HealthWatch:
    def __init__(self, call: Any) -> None:
        self._call = call

    def next_status(self) -> int:
        """The next status the server streams; raises grpc.RpcError when the stream ends."""
        status: int = next(self._call).status
        return status

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> HealthWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
