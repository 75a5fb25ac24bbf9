"""Settings shared by every test folder."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Property tests: a quick pass in `make test`, a long campaign in `make fuzz`.
settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
