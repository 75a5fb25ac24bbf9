"""Every decision visible: the span, the metric and the audit record of each Check.

``server.Check`` calls ``begin`` when a Check arrives, runs the decision inside
``observation`` (so the decision's phases land on the span, see
``authz.check.run``), and calls ``finish`` with the decision before it
answers (``unanswered`` for a Check that ended without one). ``finish``
writes the audit record first (see audit.py: it is in the kernel before the
answer leaves), then ends the span and counts the metric, all for
what the client gets: the decision, ``late`` when Envoy had stopped waiting,
or, with ``audit.on_sink_failure: deny``, the 503 that replaces a decision
whose record was not written. ``finish`` never raises: a broken exporter,
counter or sink is logged (at most every 10 s per kind) and the Check is
answered all the same.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.trace import INVALID_SPAN

from authz.check.decision import Decision
from authz.check.request import RequestView
from authz.config.models import Config
from authz.errors import ConfigError
from authz.observability.answer import Answer
from authz.observability.audit import AuditWriter
from authz.observability.audit_record import decision_record
from authz.observability.audit_sinks import audit_destination, audit_sinks, sink_names
from authz.observability.decision_log import DecisionLog
from authz.observability.metrics import Metrics
from authz.observability.metrics_export import MetricsEndpoint, build_meter_provider
from authz.observability.outcome import audit_unavailable, end_span
from authz.observability.recording import Recording
from authz.observability.serving_metrics import ServingMetrics
from authz.observability.tracing import (
    CheckObservation,
    Tracing,
    parent_context,
    resource,
    trace_id_from,
    unsampled_parent,
)
from authz.observability.worker_metrics import WORKER_INDEX_ENV, announce

__all__ = ["Observability"]

log = logging.getLogger(__name__)

_COMPLAIN_EVERY = 10.0
# How long stop() waits for span and metric exporters to flush.
EXPORT_SHUTDOWN_SECONDS = 5.0


class Observability:
    """Tracing, metrics and the audit trail of one server."""

    def __init__(
        self,
        *,
        tracing: Tracing,
        metrics: Metrics,
        audit: AuditWriter,
        endpoint: MetricsEndpoint | None = None,
        meter_provider: MeterProvider | None = None,
        audit_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self.tracing = tracing
        # The service log's line per deny or late answer (rate-limited).
        self.decision_log = decision_log if decision_log is not None else DecisionLog()
        self.metrics = metrics
        self.audit = audit
        # What happened to each Check from arrival (serving/admission.py).
        self.serving = ServingMetrics(
            meter_provider if meter_provider is not None else NoOpMeterProvider()
        )
        self._endpoint = endpoint
        self._meter_provider = meter_provider
        self._audit_timeout = audit_timeout
        self._clock = clock
        self._complained: dict[str, float] = {}  # what failed -> when it was last logged
        self._complain_lock = threading.Lock()
        self.metrics_address: str | None = None

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str] | None = None) -> Observability:
        env = os.environ if environ is None else environ
        the_resource = resource(config.telemetry)
        provider, endpoint = build_meter_provider(config.telemetry.metrics, the_resource, env)
        metrics = Metrics(provider, (issuer.issuer for issuer in config.issuers))
        metrics.zero_failures(_route_names(config), sink_names(config))
        metrics.running(config.version)
        if "queue_size" in config.audit.model_fields_set:
            log.warning(
                "audit.queue_size has no effect: each record is written before its "
                "Check is answered; remove it from the configuration"
            )
        return cls(
            tracing=Tracing.from_config(config.telemetry, the_resource, env),
            metrics=metrics,
            audit=AuditWriter(audit_sinks(config), metrics),
            endpoint=endpoint,
            meter_provider=provider,
            audit_timeout=config.audit.shutdown_timeout_seconds,
        )

    def apply(self, config: Config) -> None:
        """A reloaded configuration's settings that the server's observation follows
        (how each Check is recorded is its runtime's ``Recording``)."""
        self._audit_timeout = config.audit.shutdown_timeout_seconds
        self.metrics.follow_issuers(issuer.issuer for issuer in config.issuers)
        self.metrics.zero_failures(_route_names(config), sink_names(config))
        self.metrics.running(config.version)

    def audit_for(self, config: Config, running: Config) -> AuditWriter | None:
        """A new, opened audit writer if ``config`` moves the trail (other sinks
        than ``running``'s), else None; ConfigError if a new sink cannot be opened."""
        if audit_destination(config) == audit_destination(running):
            return None
        writer = AuditWriter(audit_sinks(config), self.metrics)
        try:
            writer.start()
        except OSError as exc:
            raise ConfigError(f"audit: cannot open a sink: {exc}") from None
        return writer

    async def replace_audit(self, writer: AuditWriter) -> None:
        """Records go to ``writer`` from now on; the old trail is fsynced and closed."""
        old, self.audit = self.audit, writer
        await asyncio.to_thread(_bounded, old.close, self._audit_timeout)

    def start(self) -> None:
        """Open the audit sinks and the metrics endpoint; errors here stop start-up."""
        try:
            self.audit.start()
        except OSError as exc:
            raise ConfigError(f"audit: cannot open a sink: {exc}") from None
        if self._endpoint is not None:
            self.metrics_address = self._endpoint.start()
            # A worker of `serve --workers N`: the supervisor's scrape fetches it.
            announce(self.metrics_address, os.environ, os.environ.get(WORKER_INDEX_ENV, ""))

    def begin(
        self, metadata: Iterable[tuple[str, str | bytes]] | None, started: float | None = None
    ) -> CheckObservation:
        """A Check's observation; ``started``: its arrival (perf_counter), if known."""
        if self.tracing.enabled:
            if self.tracing.drops_unsampled_parents:
                # Envoy's trace is not sampled: no span would be recorded, and
                # the audit record needs only Envoy's trace id.
                unsampled = unsampled_parent(metadata)
                if unsampled is not None:
                    return CheckObservation(INVALID_SPAN, unsampled, started)
            # The span starts when the Check arrived: time queued is part of it.
            start_time = (
                None
                if started is None
                else time.time_ns() - int((time.perf_counter() - started) * 1e9)
            )
            span = self.tracing.start_check(parent_context(metadata), start_time)
            return CheckObservation(span, None, started)
        # Tracing off: no context to build, just the trace id for the audit record.
        return CheckObservation(INVALID_SPAN, trace_id_from(metadata), started)

    def finish(
        self,
        observation: CheckObservation,
        request: RequestView | None,
        decision: Decision,
        *,
        recording: Recording,
        late: str | None = None,
    ) -> Decision:
        """Close a Check that decided: its audit record (written before this
        returns), span, metrics and decision log line; the decision to answer.
        Never raises.

        ``late`` (deadline_exceeded or cancelled): Envoy had stopped waiting,
        so the client got Envoy's error status, not ``decision``, and
        everything says ``late``.

        With ``audit.on_sink_failure: deny``, a decision whose record a sink did
        not take is answered 503 ``audit_unavailable`` instead: that is the
        decision returned, recorded (if a sink takes it) and counted.
        """
        answered = self._close(observation, request, decision, late, recording)
        assert answered is not None  # a decision in, a decision out
        return answered

    def unanswered(
        self,
        observation: CheckObservation,
        request: RequestView | None,
        *,
        reason: str,
        recording: Recording,
    ) -> None:
        """Close a Check that ended without a decision (shed, expired in the
        queue, cancelled before deciding): recorded and counted as ``late``."""
        self._close(observation, request, None, reason, recording)

    def _close(
        self,
        observation: CheckObservation,
        request: RequestView | None,
        decision: Decision | None,
        late: str | None,
        recording: Recording,
    ) -> Decision | None:
        seconds = time.perf_counter() - observation.started
        ids: tuple[str | None, str | None] = (None, None)
        try:
            ids = observation.ids()  # before the span ends: an ended span is not "recording"
        except Exception:
            self._complain("span")
        # First the record, so that it is in the kernel before the answer leaves.
        decision, answer = self._record(
            ids=ids,
            request=request,
            decision=decision,
            late=late,
            seconds=seconds,
            recording=recording,
        )
        try:
            observation.ended = True
            end_span(observation.span, request, decision, answer)
        except Exception:
            self._complain("span")
        try:
            self._count(decision, answer, seconds, recording.dry_run)
        except Exception:
            self._complain("metrics")
        try:
            self.decision_log.close(decision, late, request)
        except Exception:
            self._complain("decision log")
        return decision

    def _record(
        self,
        *,
        ids: tuple[str | None, str | None],
        request: RequestView | None,
        decision: Decision | None,
        late: str | None,
        seconds: float,
        recording: Recording,
    ) -> tuple[Decision | None, Answer]:
        """Write the record; the decision to answer (a 503 in place of one that
        went unrecorded, where the configuration says so) and its answer."""
        answer = Answer.of(decision, late, recording.late_status)
        write = functools.partial(
            self._write_record,
            ids=ids,
            request=request,
            seconds=seconds,
            config_version=recording.config_version,
        )
        if write(decision=decision, answer=answer):
            return decision, answer
        if recording.fail_closed and decision is not None and late is None:
            decision = audit_unavailable(decision)
            answer = Answer.of(decision, None, recording.late_status)
            write(decision=decision, answer=answer)
        return decision, answer

    def _count(
        self, decision: Decision | None, answer: Answer, seconds: float, dry_run: bool
    ) -> None:
        self.metrics.decision(
            decision=answer.decision,
            reason=answer.reason,
            issuer=decision.issuer or None if decision is not None else None,
            route=decision.route if decision is not None else "",
            seconds=seconds,
        )
        if decision is not None:
            self._count_unenforced(decision, dry_run)

    def _write_record(
        self,
        *,
        ids: tuple[str | None, str | None],
        request: RequestView | None,
        decision: Decision | None,
        answer: Answer,
        seconds: float,
        config_version: str,
    ) -> bool:
        try:
            record = decision_record(
                self._clock(),
                ids=ids,
                request=request,
                decision=decision,
                answer=answer,
                seconds=seconds,
                config_version=config_version,
            )
            return self.audit.record(record)
        except Exception:
            self._complain("audit record")
            return False

    def _count_unenforced(self, decision: Decision, dry_run: bool) -> None:
        for shadow in decision.shadows:
            self.metrics.shadow_decision(
                source="route", route=shadow.route, allowed=shadow.allowed, reason=shadow.reason
            )
        if dry_run:
            # Every decision of a dry run, so would-be denies have their share.
            would = decision.dry_run
            self.metrics.shadow_decision(
                source="dry_run",
                route=decision.route,
                allowed=would is None and decision.allowed,
                reason=decision.reason if would is None else would.reason,
            )

    def _complain(self, what: str) -> None:
        now = time.monotonic()
        with self._complain_lock:  # Checks on many threads may fail at once
            due = now - self._complained.get(what, -_COMPLAIN_EVERY) >= _COMPLAIN_EVERY
            if due:
                self._complained[what] = now
        if due:
            log.exception("observability: %s failed; the Check was answered", what)

    async def stop(self) -> None:
        """Close the audit trail (fsync), flush spans and metrics; bounded in time."""
        # Every Check has been answered: the log's suppressed count is final.
        self.decision_log.flush()
        # Every record is already written; closing fsyncs the file, which a
        # stuck disk could make hang: bounded like the exporters.
        await asyncio.to_thread(_bounded, self.audit.close, self._audit_timeout)
        if self._endpoint is not None:
            self._endpoint.stop()
        await asyncio.to_thread(_bounded, self._shutdown_exporters, EXPORT_SHUTDOWN_SECONDS)

    def _shutdown_exporters(self) -> None:
        self.tracing.shutdown()
        if isinstance(self._meter_provider, SdkMeterProvider):
            self._meter_provider.shutdown()


def _route_names(config: Config) -> list[str]:
    return [route.name for route in config.routes or ()]


def _bounded(work: Callable[[], None], seconds: float) -> None:
    """Run ``work`` in a daemon thread for at most ``seconds``: an unreachable
    collector may delay exit by that much, never hang it."""

    def run() -> None:
        try:
            work()
        except Exception:
            log.exception("telemetry shutdown failed")

    thread = threading.Thread(target=run, name="authz-telemetry-shutdown", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        log.warning("telemetry exporters did not flush within %.1fs; continuing", seconds)
