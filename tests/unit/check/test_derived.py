"""derived: what routes derive from a token, kept only once the token repeats."""

from __future__ import annotations

import threading

from authz.check.derived import MISSING, Derived


def test_a_token_seen_once_keeps_nothing() -> None:
    derived = Derived()
    derived.put(0, "identity", (("x-sub", "alice"),))
    assert derived.get(0, "identity") is MISSING
    assert len(derived) == 0


def test_a_repeated_token_keeps_each_route_and_kind_apart() -> None:
    derived = Derived()
    derived.keep()
    derived.put(0, "identity", (("x-sub", "alice"),))
    derived.put(0, "requirements", None)  # None is an outcome: no requirements
    derived.put(1, "identity", ())
    assert derived.get(0, "identity") == (("x-sub", "alice"),)
    assert derived.get(0, "requirements") is None
    assert derived.get(1, "identity") == ()
    assert derived.get(1, "requirements") is MISSING
    assert len(derived) == 3


def test_threads_deriving_at_once_leave_every_entry_whole() -> None:
    derived = Derived()
    derived.keep()
    barrier = threading.Barrier(8)

    def derive(worker: int) -> None:
        barrier.wait()
        for route in range(200):
            derived.put(route, f"kind-{worker}", (worker, route))

    threads = [threading.Thread(target=derive, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(derived) == 8 * 200
    assert all(
        derived.get(route, f"kind-{worker}") == (worker, route)
        for worker in range(8)
        for route in range(200)
    )
