"""A counter that costs a dict update per add: for counts taken on every Check."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["Attributes", "Tally"]

# A label set, as a hashable tuple of (name, value) pairs.
Attributes = tuple[tuple[str, str], ...]


class Tally:
    """A counter kept in a dict and reported through an observable counter.

    The SDK's synchronous counter hashes and validates its attributes on every
    ``add``, which cost more than the rest of a cached Check; here an add is a
    dict update under the tally's lock (Checks on many threads add at once) and
    the SDK reads the totals only when it collects.
    """

    def __init__(self, meter: Meter, name: str, unit: str, description: str) -> None:
        self._counts: dict[Attributes, int] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def also_as(self, meter: Meter, name: str, unit: str, description: str) -> None:
        """Report the same counts under a second name too (a renamed metric's old one)."""
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: int, attributes: Attributes) -> None:
        with self._lock:
            self._counts[attributes] = self._counts.get(attributes, 0) + amount

    def _observe(self, options: CallbackOptions) -> Iterator[Observation]:
        with self._lock:
            counts = tuple(self._counts.items())
        for attributes, count in counts:
            yield Observation(count, dict(attributes))
