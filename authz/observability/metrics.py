"""Metrics: what was decided, how fast, and how the audit trail and keys are doing.

Instruments are OpenTelemetry's; where they go is configuration
(``telemetry.metrics``): a Prometheus scrape endpoint, an OTLP push, both, or
nowhere (then every instrument is a no-op). Names, as Prometheus shows them:

====================================  =========  ==============================================
``authz_decisions_total``             counter    decision (allow | deny | late | unknown),
                                                 reason, issuer, route
``authz_shadow_decisions_total``      counter    source (route | dry_run), route, would, reason
``authz_check_duration_seconds``      histogram  decision
``authz_audit_records_total``         counter    outcome (written | dropped), reason
                                                 (none | write_error | shutdown | error)
``authz_audit_write_errors_total``    counter    sink (stdout | file)
``authz_key_fetches_total``           counter    issuer, result
``authz_key_age_seconds``             gauge      issuer
``authz_token_cache_lookups_total``   counter    issuer, result (hit | miss): the verified-token
                                                 cache (see below)
``authz_key_cache_lookups_total``     counter    the same, under its former name: deprecated
``authz_reloads_total``               counter    result (applied | failed | restart_required |
                                                 refused_widening)
``authz_config_restart_required``     gauge      setting: 1 while the file changes it and
                                                 only a restart would apply it
``authz_config_refused``              gauge      result: 1 from a refused reload until one
                                                 applies
``authz_config_info``                 gauge      version: 1 for the configuration in force
====================================  =========  ==============================================

``authz_decisions_total`` counts what the client got: ``late`` (reason
``deadline_exceeded`` or ``cancelled``) when authz answered after Envoy had
stopped waiting, so the client got Envoy's error instead. What was evaluated but
not enforced goes to ``authz_shadow_decisions_total``: each shadow route that
took a request (``source="route"``, ``would`` allow or deny), and in a dry run
each decision (``source="dry_run"``; a would-be deny was answered as an allow
with reason ``dry_run``).

Every label set is bounded: ``reason`` is one of the error classes' reasons,
``issuer`` a configured issuer or ``unknown`` (the ``iss`` of a token that was
not verified is attacker-chosen), ``route`` a configured route name or
``none``. Never a path, a subject or a token.

``authz_token_cache_lookups_total`` counts the verifier's cache of verified
tokens: ``hit`` when a token was answered from it, ``miss`` when a token had
to be verified afresh and verified (a token that fails verification is not
counted). Its hit ratio is what the token cache saves. It was called
``authz_key_cache_lookups_total``, which is still served with the same values
for one release (docs/operations.md).

Key metrics are fed by the key store and the verifier, built with this server's
``Metrics`` as their ``KeyEvents`` (authz/keys/events.py). Where the numbers
go, and what the scrape endpoint serves besides the instruments, is
``authz.observability.metrics_export``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from opentelemetry.metrics import (
    CallbackOptions,
    MeterProvider,
    Observation,
)

from authz.errors import AuthzError
from authz.memo import BoundedMemo
from authz.observability.tally import Attributes, Tally

__all__ = [
    "AUDIT_RECORDS",
    "AUDIT_WRITE_ERRORS",
    "BUILD_INFO",
    "CHECK_DURATION",
    "CONFIG_INFO",
    "CONFIG_REFUSED",
    "DECISIONS",
    "DURATION_BUCKETS",
    "FETCH_RESULTS",
    "KEY_AGE",
    "KEY_CACHE_LOOKUPS",
    "KEY_FETCHES",
    "RELOADS",
    "RELOAD_RESULTS",
    "RESTART_REQUIRED",
    "SHADOW_DECISIONS",
    "TOKEN_CACHE_LOOKUPS",
    "Labels",
    "Metrics",
    "Tally",
    "known_reasons",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# OpenTelemetry instrument names; the Prometheus names add the unit and _total.
DECISIONS = "authz.decisions"
SHADOW_DECISIONS = "authz.shadow.decisions"
CHECK_DURATION = "authz.check.duration"
AUDIT_RECORDS = "authz.audit.records"
AUDIT_WRITE_ERRORS = "authz.audit.write_errors"
KEY_FETCHES = "authz.key.fetches"
KEY_AGE = "authz.key.age"
TOKEN_CACHE_LOOKUPS = "authz.token.cache.lookups"  # noqa: S105 - a metric name
KEY_CACHE_LOOKUPS = "authz.key.cache.lookups"  # the former name, deprecated
RELOADS = "authz.reloads"
RESTART_REQUIRED = "authz.config.restart_required"
CONFIG_REFUSED = "authz.config.refused"
CONFIG_INFO = "authz.config.info"
RELOAD_RESULTS = ("applied", "failed", "restart_required", "refused_widening")
# Served by the scrape endpoint alone (prometheus-client), not an instrument.
BUILD_INFO = "authz_build_info"

# Seconds. Envoy gives up on a Check after 250 ms (envoy/gateway.yaml), so the
# buckets are fine below that and coarse above.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,  # AuthzCheckLatencyHigh's threshold: a boundary, so it is read, not interpolated
    0.25,
    0.5,
    1.0,
)
# What a key fetch may end as; anything else is counted as "other".
FETCH_RESULTS = frozenset({"ok", "error", "timeout", "invalid", "rate_limited"})
UNKNOWN = "unknown"
NO_ROUTE = "none"
OTHER = "other"
_MAX_ROUTE_LABEL = 64
# The 503s an alert pages on: authz could not decide.
_PAGING_REASONS = ("keys_unavailable", "internal_error", "audit_unavailable")


def known_reasons() -> frozenset[str]:
    """``allowed``, ``dry_run`` and the reason of every AuthzError class defined so far."""
    # "dry_run" is decision.DRY_RUN, written out (metrics stays below check/ in the
    # imports); the late reasons are the serving layer's (serving/service.py).
    reasons = {"allowed", "dry_run", "deadline_exceeded", "cancelled", "overloaded", "expired"}
    reasons.add("deadline_uncertain")
    pending: list[type[AuthzError]] = [AuthzError]
    while pending:
        cls = pending.pop()
        reasons.add(cls.reason)
        pending.extend(cls.__subclasses__())
    return frozenset(reasons)


class Labels:
    """Maps decision data to bounded label values."""

    def __init__(self, issuers: Iterable[str]) -> None:
        self._issuers = frozenset(issuers)
        self._reasons = known_reasons()

    @property
    def issuers(self) -> frozenset[str]:
        return self._issuers

    def issuer(self, issuer: str | None) -> str:
        return issuer if issuer in self._issuers else UNKNOWN

    def reason(self, reason: str) -> str:
        return reason if reason in self._reasons else OTHER

    @staticmethod
    def route(route: str) -> str:
        # Route names come from the configuration; the cap is a second fence.
        return route[:_MAX_ROUTE_LABEL] if route else NO_ROUTE

    @staticmethod
    def fetch_result(result: str) -> str:
        return result if result in FETCH_RESULTS else OTHER


_AUDIT_WRITTEN: Attributes = (("outcome", "written"), ("reason", "none"))
_MEMO_LIMIT = 10_000


class Metrics:
    """The service's instruments. ``provider`` decides where the numbers go."""

    def __init__(
        self,
        provider: MeterProvider,
        issuers: Iterable[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.labels = Labels(issuers)
        self._clock = clock
        self._loaded_at: dict[str, float] = {}
        meter = provider.get_meter("authz")
        self._decisions = Tally(meter, DECISIONS, "{decision}", "Check decisions")
        self._shadow = Tally(
            meter, SHADOW_DECISIONS, "{decision}", "Decisions evaluated and reported, not enforced"
        )
        self._shadow_labels: BoundedMemo[tuple[str, str, bool, str], Attributes] = BoundedMemo(
            _MEMO_LIMIT
        )
        # Raw (decision, reason, issuer, route) -> label attributes; every part
        # is from a bounded set, and the memo is bounded all the same.
        # The label sets of raw values, memoized: computing them costs more than
        # the count. Shared by Checks on many threads: BoundedMemo (its lock).
        self._decision_labels: BoundedMemo[tuple[str, str, str | None, str], Attributes] = (
            BoundedMemo(_MEMO_LIMIT)
        )
        self._duration_attributes = {
            decision: {"decision": decision} for decision in ("allow", "deny", "late", "unknown")
        }
        self._duration = meter.create_histogram(
            CHECK_DURATION,
            unit="s",
            description="Time to answer a Check, from receipt to response",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # Counted per record, from the Checks' threads: tallies, like the decisions.
        self._audit = Tally(meter, AUDIT_RECORDS, "{record}", "Audit records written or dropped")
        self._audit_errors = Tally(
            meter, AUDIT_WRITE_ERRORS, "{record}", "Audit records a sink failed to take"
        )
        self._fetches = meter.create_counter(
            KEY_FETCHES, unit="{fetch}", description="Key set fetches by result"
        )
        self._cache = Tally(
            meter, TOKEN_CACHE_LOOKUPS, "{lookup}", "Verified-token cache lookups by result"
        )
        self._cache.also_as(
            meter, KEY_CACHE_LOOKUPS, "{lookup}", "Deprecated: authz_token_cache_lookups_total"
        )
        self._cache_labels: BoundedMemo[tuple[str, bool], Attributes] = BoundedMemo(_MEMO_LIMIT)
        meter.create_observable_gauge(
            KEY_AGE,
            callbacks=[self._observe_key_age],
            unit="s",
            description="Age of the key set in use, per issuer",
        )
        self._reloads = Tally(meter, RELOADS, "{reload}", "Configuration reloads by result")
        self._restart_required: frozenset[str] = frozenset()
        self._restart_settings: set[str] = set()  # every setting ever reported, for the zeros
        meter.create_observable_gauge(
            RESTART_REQUIRED,
            callbacks=[self._observe_restart_required],
            unit="1",
            description="1 for a setting the file changes that only a restart applies",
        )
        for result in RELOAD_RESULTS:
            self._reloads.add(0, (("result", result),))
        # The file on disk stays refused until a reload applies another: the
        # alert on it must not resolve while it is (a counter's increase would).
        self._refused: str | None = None
        meter.create_observable_gauge(
            CONFIG_REFUSED,
            callbacks=[self._observe_refused],
            unit="1",
            description="1 while the configuration file's last change was refused, by why",
        )
        self._version = ""
        meter.create_observable_gauge(
            CONFIG_INFO,
            callbacks=[self._observe_version],
            unit="1",
            description="1, labelled with the version of the configuration in force",
        )
        # Zero series up front, so "no drops" is a 0 and not a missing series.
        self._audit.add(0, _AUDIT_WRITTEN)
        for reason in ("write_error", "shutdown"):
            self._audit.add(0, (("outcome", "dropped"), ("reason", reason)))

    def decision(
        self, *, decision: str, reason: str, issuer: str | None, route: str, seconds: float
    ) -> None:
        """One Check's answer: ``decision`` is allow, deny or late."""
        raw = (decision, reason, issuer, route)
        attributes = self._decision_labels.get(raw)
        if attributes is None:
            attributes = (
                ("decision", decision),
                ("reason", self.labels.reason(reason)),
                ("issuer", self.labels.issuer(issuer)),
                ("route", self.labels.route(route)),
            )
            self._decision_labels.put(raw, attributes)
        self._decisions.add(1, attributes)
        self._duration.record(seconds, self._duration_attributes[decision])

    def shadow_decision(self, *, source: str, route: str, allowed: bool, reason: str) -> None:
        """One outcome that was reported, not enforced (``source``: route or dry_run)."""
        raw = (source, route, allowed, reason)
        attributes = self._shadow_labels.get(raw)
        if attributes is None:
            attributes = (
                ("source", source),
                ("route", self.labels.route(route)),
                ("would", "allow" if allowed else "deny"),
                ("reason", self.labels.reason(reason)),
            )
            self._shadow_labels.put(raw, attributes)
        self._shadow.add(1, attributes)

    def reloaded(self, result: str, restart_required: Iterable[str] = ()) -> None:
        """One configuration reload's outcome (RELOAD_RESULTS); ``restart_required``:
        the settings it would have changed that only a restart applies."""
        self._reloads.add(1, (("result", result),))
        self._refused = None if result == "applied" else result
        self._restart_required = frozenset(restart_required)
        self._restart_settings.update(self._restart_required)

    def follow_issuers(self, issuers: Iterable[str]) -> None:
        """A reload changed the configured issuers: label by the new ones."""
        self.labels = Labels(issuers)
        # Memoized label sets name issuers as the old labels saw them.
        # (Each replaced whole: a Check holds the old memo or the new one.)
        self._decision_labels = BoundedMemo(_MEMO_LIMIT)
        self._cache_labels = BoundedMemo(_MEMO_LIMIT)

    def zero_failures(self, routes: Iterable[str], sinks: Iterable[str]) -> None:
        """Series at 0 for every answer that pages (each 503 reason, per configured
        issuer and route) and for each audit sink's write errors, so that their
        first increment is an increase a rate() sees, not a new series."""
        issuers = sorted(self.labels.issuers | {UNKNOWN})
        for reason in _PAGING_REASONS:
            for issuer in issuers:
                for route in {*(self.labels.route(name) for name in routes), NO_ROUTE}:
                    attributes = (
                        ("decision", "deny"),
                        ("reason", reason),
                        ("issuer", issuer),
                        ("route", route),
                    )
                    self._decisions.add(0, attributes)
        for sink in sinks:
            self._audit_errors.add(0, (("sink", sink),))

    # The audit writer's counters (audit.AuditCounters).
    def audit_written(self, count: int) -> None:
        self._audit.add(count, _AUDIT_WRITTEN)

    def audit_dropped(self, reason: str, count: int) -> None:
        self._audit.add(count, (("outcome", "dropped"), ("reason", reason)))

    def audit_write_failed(self, sink: str, count: int) -> None:
        self._audit_errors.add(count, (("sink", sink),))

    # KeyEvents.
    def key_fetch(self, issuer: str, result: str) -> None:
        self._fetches.add(
            1, {"issuer": self.labels.issuer(issuer), "result": self.labels.fetch_result(result)}
        )

    def keys_loaded(self, issuer: str, loaded_at: float) -> None:
        self._loaded_at[self.labels.issuer(issuer)] = loaded_at

    def token_cache(self, issuer: str, hit: bool) -> None:
        attributes = self._cache_labels.get((issuer, hit))
        if attributes is None:
            attributes = (
                ("issuer", self.labels.issuer(issuer)),
                ("result", "hit" if hit else "miss"),
            )
            self._cache_labels.put((issuer, hit), attributes)
        self._cache.add(1, attributes)

    def running(self, version: str) -> None:
        """The configuration version in force (at start, and after each applied reload)."""
        self._version = version

    def _observe_version(self, options: CallbackOptions) -> Iterator[Observation]:
        if self._version:
            yield Observation(1, {"version": self._version})

    def _observe_refused(self, options: CallbackOptions) -> Iterator[Observation]:
        refused = self._refused
        for result in RELOAD_RESULTS:
            if result != "applied":
                yield Observation(1 if result == refused else 0, {"result": result})

    def _observe_restart_required(self, options: CallbackOptions) -> Iterator[Observation]:
        pending = self._restart_required
        for setting in sorted(self._restart_settings):
            yield Observation(1 if setting in pending else 0, {"setting": setting})

    def _observe_key_age(self, options: CallbackOptions) -> Iterator[Observation]:
        now = self._clock()
        for issuer, loaded_at in tuple(self._loaded_at.items()):
            yield Observation(max(0.0, now - loaded_at), {"issuer": issuer})
