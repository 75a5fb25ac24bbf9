"""``authz explain``: one request decided by the service's own code, step by step.

The decision comes from the same ``Decider`` the server builds (through
``runtime.build_runtime``), with a trace attached, and the final answer is the
``CheckResponse`` that ``response.build`` would send Envoy. Nothing here
decides anything; it only prints.

The token is never printed, only its fingerprint. Its header and claims are
shown decoded *without verification* when verification fails, marked as
such, because "which kid, which iss, which exp" is what one needs to know
then; that decoding is display-only and never feeds a decision.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import json_format

from authz.check import response
from authz.check.decision import Decision
from authz.check.policy import Check
from authz.check.request import RequestView
from authz.check.run import Phase, Step
from authz.check.verify import Clock
from authz.config.models import Config
from authz.keys.sources import FetchingKeySource, KeySource
from authz.runtime import build_runtime

__all__ = ["FixedClock", "explain"]

_WIDTH = 13


class FixedClock:
    """``--at``: decide as of a given time (e.g. when a request was denied)."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def explain(
    config: Config,
    request: RequestView,
    out: TextIO,
    keys: KeySource | None = None,
    clock: Clock | None = None,
) -> Decision:
    """Decide ``request`` as the service would, print each step to ``out``."""
    runtime = build_runtime(config, keys, clock)
    trace: list[Step] = []

    store = runtime.keys
    # The key source's fetches run on this loop, as the server's run on its own.
    with asyncio.Runner() as loop:
        if isinstance(store, FetchingKeySource):
            # As the service would have them: remote keys fetched, not absent.
            loop.run(store.fetch_all())
        try:
            decision = runtime.decider.decide(request, trace)
        finally:
            if isinstance(store, FetchingKeySource):
                loop.run(store.close())
    now = clock.now() if clock is not None else time.time()

    _line(out, "request", f"{request.method} {request.host or '-'} {request.path}")
    if request.context_extensions:
        extensions = ", ".join(f"{k}={v}" for k, v in sorted(request.context_extensions.items()))
        _line(out, "", f"context_extensions: {extensions}")
    for step in trace:
        _print_step(out, step, decision=decision, keys=runtime.keys, now=now)
        if step.phase is Phase.TOKEN and step.outcome == "fail":
            _print_unverified(out, request, now)
    _print_answer(out, decision, config)
    return decision


def _print_step(
    out: TextIO,
    step: Step,
    *,
    decision: Decision,
    keys: KeySource,
    now: float,
) -> None:
    outcome = {"ok": "ok", "fail": "FAIL", "skip": "skip", "info": "note"}[step.outcome]
    text = step.text
    if step.skipped is not None and step.condition:
        text = f"{text} (route: {step.skipped.describe(step.condition)})"
    _line(out, step.phase, f"{outcome:<5} {text}".rstrip())
    if step.check is not None:
        # The root is the route's implicit "all of": its parts read better flat.
        top = step.check.children if step.check.label == "requirements" else (step.check,)
        for check in top:
            _print_check(out, check, depth=1)
    if step.phase is Phase.TOKEN and step.outcome == "ok" and decision.token is not None:
        _print_token(out, decision, keys, now)


def _print_check(out: TextIO, check: Check, depth: int) -> None:
    mark = "ok  " if check.passed else "FAIL"
    detail = f" — {check.detail}" if check.detail else ""
    _line(out, "", f"{'  ' * depth}[{mark}] {check.label}{detail}")
    for child in check.children:
        _print_check(out, child, depth + 1)


def _print_token(out: TextIO, decision: Decision, keys: KeySource, now: float) -> None:
    token = decision.token
    assert token is not None
    issuer_keys = keys.keys_for(token.issuer)
    key = issuer_keys.by_kid.get(token.kid) if issuer_keys and token.kid else None
    kind = f" ({key.kind})" if key is not None else ""
    _line(out, "", f"key    kid {token.kid or '(none)'}{kind}, alg {token.algorithm}")
    claims = token.claims
    checked = [
        f"{name} {_when(claims[name], now)}" for name in ("exp", "nbf", "iat") if name in claims
    ]
    checked.append(f"aud {claims.get('aud')}")
    _line(out, "", "claims " + "; ".join(checked))
    _line(out, "", f"       present: {', '.join(sorted(claims))}")


def _print_unverified(out: TextIO, request: RequestView, now: float) -> None:
    header, claims = _peek(request)
    if header is None and claims is None:
        return
    shown: list[str] = []
    if isinstance(header, dict):
        shown += [f"{name} {header[name]!r}" for name in ("alg", "kid") if name in header]
    if isinstance(claims, dict):
        shown += [f"{name} {claims[name]!r}" for name in ("iss", "aud", "sub") if name in claims]
        shown += [f"{name} {_when(claims[name], now)}" for name in ("exp", "nbf") if name in claims]
    _line(out, "", f"UNVERIFIED, for display only: {'; '.join(shown) or 'nothing readable'}")


def _peek(request: RequestView) -> tuple[Any, Any]:
    # Display only (see the module docstring): verify.py decides, this never does.
    values = request.header("authorization")
    parts = values[0].strip().split(" ", 1)[-1].strip().split(".") if values else []
    if len(parts) != 3:
        return None, None
    return _segment(parts[0]), _segment(parts[1])


def _segment(text: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        return None


def _when(value: Any, now: float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} (not a time)"
    try:
        stamp = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{value!r} (out of range)"
    delta = round(value - now)
    relative = f"in {delta} s" if delta >= 0 else f"{-delta} s ago"
    return f"{stamp} ({relative})"


def _print_answer(out: TextIO, decision: Decision, config: Config) -> None:
    reply = response.build(decision, config.realm)
    if decision.allowed:
        dry_run = decision.dry_run
        unenforced = (
            f" (dry run: would deny {dry_run.status} {dry_run.reason}: {dry_run.detail})"
            if dry_run is not None
            else ""
        )
        _line(out, "answer", f"ALLOW{unenforced}")
        for option in reply.ok_response.headers:
            _line(out, "", f"set     {option.header.key}: {option.header.value}")
        removed = ", ".join(reply.ok_response.headers_to_remove) or "-"
        _line(out, "", f"remove  {removed}")
    else:
        _line(out, "answer", f"DENY {decision.status} {decision.reason}: {decision.detail}")
        denied = reply.denied_response
        for option in denied.headers:
            _line(out, "", f"{option.header.key}: {option.header.value}")
        _line(out, "", f"body: {denied.body}")
    for shadow in decision.shadows:
        verdict = (
            "allow" if shadow.allowed else f"deny {shadow.status} {shadow.reason}: {shadow.detail}"
        )
        _line(out, "shadow", f"{shadow.route} would {verdict} (not enforced)")
    metadata = json_format.MessageToDict(reply.dynamic_metadata)
    _line(out, "", f"metadata {json.dumps(metadata, sort_keys=True)}")


def _line(out: TextIO, label: str, text: str) -> None:
    print(f"{label:<{_WIDTH}}{text}", file=out)
