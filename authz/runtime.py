"""What serves requests, built from one configuration, and its live reload.

A ``Runtime`` holds one validated ``Config`` and everything built from it
(keys, verifier, policy, revocation list, decider). It is immutable and is
replaced whole, by reference, when the configuration file changes: a Check
takes the current runtime once and uses it to the end, so no request ever sees
half of an old and half of a new configuration.

``build_runtime`` is the one place where a configuration becomes a decider.
The key source (a KeyStore, with its background refresh) is built there too;
the server keeps it across reloads that leave the issuers unchanged.

``ConfigFile`` notices changes by polling the file's resolved path and stat
(see watch.py, which explains the Kubernetes ConfigMap symlink swap) and a
digest of its bytes; the server's watch task calls ``poll`` off the event loop
and swaps the runtime in. Only a whole file is taken (watch.WholeFile): one
published by a swapped link (a ConfigMap update) at once, anything written
at the path itself (in place, re-created, renamed over) once two polls found
it unchanged and it is at least a poll interval old (a writer still at work
changes it; a truncated YAML file may well be valid). A new file that does not
parse or validate, or whose keys or revocation list cannot be loaded, keeps
the running configuration; the error is logged with file, line and key path
and kept in ``ReloadStatus``.

A reload that keeps the DPoP replay settings keeps the replay store: a
reload must not forget the proofs already seen, or each could be replayed
once more.

A reload that keeps the revocation file keeps its ``RevocationList``: read
afresh, a list being rewritten could be taken half-way, while the running one
waits until the file is whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.trace import Tracer

from authz.check.binding import SenderChecks
from authz.check.decision import Decider
from authz.check.replay import ReplayStore, replay_store
from authz.check.revocation import RevocationList
from authz.check.verify import Clock, Verifier
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.keys.events import NO_EVENTS, Guarded, KeyEvents
from authz.keys.sources import KeySource, ManagedKeySource
from authz.keys.store import KeyStore, traced_fetchers
from authz.keys.waiting import LoopBridge
from authz.observability.recording import Recording
from authz.watch import WholeFile

__all__ = [
    "ConfigFile",
    "ReloadStatus",
    "Runtime",
    "build_runtime",
    "close_replay",
    "same_replay",
]

MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    keys: KeySource
    decider: Decider
    revocations: RevocationList | None = None
    # How this configuration's decisions are recorded (its version, dry run …):
    # part of the snapshot, so a Check is recorded under the config that decided it.
    recording: Recording = field(default_factory=Recording)
    # The DPoP replay store (None without a dpop section), kept across reloads.
    replay: ReplayStore | None = None


def build_runtime(
    config: Config,
    keys: KeySource | None = None,
    clock: Clock | None = None,
    tracer: Tracer | None = None,
    bridge: LoopBridge | None = None,
    *,
    revocations: RevocationList | None = None,
    events: KeyEvents = NO_EVENTS,
    replay: ReplayStore | None = None,
) -> Runtime:
    """Keys, verifier, revocation list and decider for ``config``; ConfigError if unusable.

    ``keys`` replaces the key source built from the configuration (tests inject
    fakes here); ``tracer`` records the key store's fetches; ``bridge`` is how a
    Check's thread waits on a key refetch (without one, an unknown kid is final);
    ``revocations`` is the running list, kept if ``config`` names the same file;
    ``replay`` the running replay store, kept (the caller checks that the
    settings are the same: ``same_replay``); ``events`` hears the key store's
    and the verifier's events (the server's metrics).
    """
    events = events if events is NO_EVENTS else Guarded(events)
    if keys is not None:
        source = keys
    elif tracer is not None:
        source = KeyStore(config, fetcher_factory=traced_fetchers(tracer), events=events)
    else:
        source = KeyStore(config, events=events)
    revocations = _revocation_list(config, revocations)
    refetch = (
        bridge.refetcher(source)
        if bridge is not None and isinstance(source, ManagedKeySource)
        else None
    )
    if config.dpop is not None and replay is None:
        replay = replay_store(config.dpop.replay, config.base_dir)
    sender = SenderChecks.from_config(config, replay, clock)
    verifier = Verifier(config, source, clock, events)
    decider = Decider(config, verifier, revocations, refetch, sender)
    return Runtime(
        config=config,
        keys=source,
        decider=decider,
        revocations=revocations,
        recording=Recording.of(config),
        replay=replay if config.dpop is not None else None,
    )


def same_replay(previous: Config, config: Config) -> bool:
    """Whether ``config`` keeps ``previous``'s replay store (the same settings)."""
    return (
        previous.dpop is not None
        and config.dpop is not None
        and previous.dpop.replay == config.dpop.replay
        and previous.base_dir == config.base_dir
    )


def close_replay(store: ReplayStore | None) -> None:
    """Close a store that holds connections (Redis); a memory store has none."""
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _revocation_list(config: Config, running: RevocationList | None) -> RevocationList | None:
    if config.revocation is None:
        return None
    path = config.resolve(config.revocation.file)
    if running is not None and running.path == path:
        return running  # its watch waits for a whole file; a new read would not
    return RevocationList(path)


@dataclass
class ReloadStatus:
    """Outcome of the configuration reloads so far, for logs, health and metrics."""

    reloads: int = 0
    failures: int = 0
    last_error: str | None = None


class ConfigFile:
    """The configuration file being served; ``poll`` returns a changed, whole, valid Config."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._file = WholeFile(path, MAX_CONFIG_BYTES, clock)
        self.config = self._parse(self._file.text)

    def poll(self, settle_seconds: float) -> Config | None:
        """The new Config if the file changed and is whole (watch.WholeFile: written
        at its path, it must have stood still for ``settle_seconds``); None if not
        (yet); ConfigError if it is unusable, once per content.

        Blocking file I/O: call it from a worker thread, not the event loop.
        """
        text = self._file.changed(settle_seconds)
        return None if text is None else self._parse(text)

    def _parse(self, text: str) -> Config:
        # Relative paths resolve against the file's real directory, as load_config does:
        # with a ConfigMap that is the published snapshot's own directory.
        base_dir = Path(os.path.realpath(self.path)).parent
        return parse_config(text, source=str(self.path), base_dir=base_dir)
