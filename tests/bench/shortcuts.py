"""What each speed shortcut of a warm Check still buys, in µs per call, beside what it replaces.

    make bench-check      (or: .venv/bin/python -m tests.bench.shortcuts)

Each row times the shortcut and the plain code it stands in for, on the same
input, in one process (timeit, best of rounds, rounds interleaved). These are
the shortcuts kept because their saving still shows beside a Check's cost
(docs/performance.md has the table, with the ones removed):

- the audit record's trace id read from the traceparent (tracing.trace_id_from)
  against building OpenTelemetry's context from it;
- no span asked of the SDK when Envoy's trace is not sampled (the sampler read
  once, from the SDK's ParentBased) against asking the SDK for one;
- a counter kept in a locked dict (metrics.Tally) against the SDK's counter.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from authz.observability.metrics import Tally
from authz.observability.tracing import Tracing, parent_context, trace_id_from, unsampled_parent

__all__ = ["main"]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
METADATA = (("traceparent", TRACEPARENT), ("x-request-id", "bench"))


def _pairs() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    tracing = Tracing(provider)

    def span_asked() -> object:
        span = tracing.start_check(parent_context(METADATA))
        span.end()
        return span

    meter = MeterProvider().get_meter("bench")
    tally = Tally(meter, "bench.tally", "1", "")
    counter = meter.create_counter("bench.counter")
    labels = (("decision", "allow"), ("reason", "allowed"), ("issuer", "x"), ("route", "r"))
    label_dict = dict(labels)

    return [
        (
            "trace id for the record: own parser / propagator",
            lambda: trace_id_from(METADATA),
            lambda: trace.get_current_span(parent_context(METADATA)).get_span_context().trace_id,
        ),
        (
            "unsampled parent: no span / SDK span",
            lambda: unsampled_parent(METADATA),
            span_asked,
        ),
        (
            "counter add: Tally / SDK counter",
            lambda: tally.add(1, labels),
            lambda: counter.add(1, label_dict),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    pairs = _pairs()
    best = {name: [float("inf"), float("inf")] for name, _, _ in pairs}
    for _ in range(args.rounds):
        for name, shortcut, plain in pairs:
            for side, call in enumerate((shortcut, plain)):
                seconds = timeit.timeit(call, number=args.number)
                best[name][side] = min(best[name][side], seconds / args.number * 1e6)
    print(f"\nSpeed shortcuts, µs per call (best of {args.rounds} x {args.number:,}):")
    print(f"  {'shortcut / what it replaces':<52} {'shortcut':>9} {'plain':>8} {'saves':>7}")
    for name, (shortcut_us, plain_us) in best.items():
        print(f"  {name:<52} {shortcut_us:>9.2f} {plain_us:>8.2f} {plain_us - shortcut_us:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
