"""Waiting work handed from a Check's thread to the loop that owns the keys.

Checks run on gRPC's worker threads and never await. What must wait — a key
refetch after an unknown ``kid`` — belongs to the asyncio loop that runs the
key sources' background work (their refresh tasks, their single-flight
refetch). A ``LoopBridge`` is bound to that loop when the server starts; a
Check hands it the refetch and blocks for at most the Check's budget. A fetch
already in flight is shared: the key source keeps it, and every waiting Check
waits on the same one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Callable
from typing import Protocol

from authz.keys.sources import ManagedKeySource

__all__ = ["Caller", "LoopBridge"]

# Past the budget, the coroutine (bounded by the same budget) has surely
# answered; this is only a fence against a loop that is not turning.
_FENCE = 0.05


class Caller(Protocol):
    """What a wait needs of the Check's RPC (grpc.ServicerContext has it)."""

    def add_callback(self, callback: Callable[[], None]) -> bool: ...


class LoopBridge:
    """The loop that runs key sources' background work, once bound."""

    __slots__ = ("_local", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._local = threading.local()  # the RPC each thread decides for

    def attach(self, caller: Caller | None) -> None:
        """This thread now decides for ``caller`` (None: for no RPC)."""
        self._local.caller = caller

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def refetcher(self, source: ManagedKeySource) -> Callable[[str, float], bool]:
        """``source.refetch``, callable from any thread but the loop's own."""

        def refetch(issuer: str, budget: float) -> bool:
            loop = self._loop
            if loop is None or loop.is_closed() or _running_loop() is loop:
                # Not started, stopped, or called on the loop itself: waiting here
                # would block the very loop that must do the fetch.
                return False
            future = asyncio.run_coroutine_threadsafe(source.refetch(issuer, budget), loop)
            caller: Caller | None = getattr(self._local, "caller", None)
            if caller is not None and not caller.add_callback(lambda: _cancel(future)):
                future.cancel()  # the RPC has already ended
                return False
            try:
                return future.result(None if math.isinf(budget) else budget + _FENCE)
            except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                future.cancel()
                return False

        return refetch


def _cancel(future: concurrent.futures.Future[bool]) -> None:
    future.cancel()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
