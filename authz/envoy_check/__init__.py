"""``authz check-envoy``: the Envoy settings authz relies on, checked in a config file.

authz decides on what Envoy shows it, and the upstream acts on what Envoy
forwards. That is sound only if Envoy, in front of authz:

- fails closed: ``failure_mode_allow`` off, and an error status (503) that no
  one takes for success or for authz's own deny when authz cannot be asked;
- shows authz every request header, repeats kept (no ``allowed_headers``,
  ``encode_raw_headers: true``): the credential, the identity namespace, and
  all the others, which authz counts against Envoy's request header limits;
- has the header limits authz is told of (``envoy`` in authz's configuration),
  so that an allow whose identity headers do not fit is authz's 431, not
  Envoy's 500;
- normalizes the path (``normalize_path``, ``merge_slashes``) and refuses an
  encoded ``/`` or ``\\`` (``path_with_escaped_slashes_action``), so authz and
  the upstream read one path;
- refuses header names with ``_`` (``headers_with_underscores_action``), which
  CGI/WSGI servers fold into the dash spelling of authz's identity headers;
- at the edge, trusts no client's ``x-envoy-*`` headers, ``x-request-id`` or
  ``x-forwarded-for`` (``use_remote_address``, ``internal_address_config``);
- gives authz time to refetch keys after an unknown ``kid`` (the ext_authz
  timeout), and checks every route authz protects.

This module reads an Envoy bootstrap (YAML or JSON, ``static_resources``), or
a Kubernetes ConfigMap carrying one under ``data`` (also inside a multi-document
stream such as ``kubectl kustomize`` output), or what a running Envoy holds as
its admin ``/config_dump`` answers it, and reports each setting that breaks one
of these as ``FILE:LINE: what: why``. LINE is the offending key's
line, or the enclosing object's when a key is missing; for a config embedded
in a ConfigMap, lines are the ConfigMap file's (a block scalar, ``|``) or the
data key's (any other string style).

Which listeners are edges: every listener clients could reach, i.e. all but a
Unix socket (``pipe``), an Envoy internal listener, and one marked
``metadata: {filter_metadata: {authz: {edge: false}}}`` (e.g. one only your own
proxy connects to). A loopback address counts as an edge: port forwards and
local proxies bring outside traffic to it.

A listener whose every route leads to Envoy's own admin interface (a static
cluster at the admin address, e.g. a window for Prometheus on
``/stats/prometheus``) reaches no upstream and is not held to these checks;
a route to admin anywhere must match an exact read-only page (``admin``).

With authz's configuration (``-c``), the checks that need it run too: the
identity namespace in ``allowed_headers``, the ext_authz timeout against
``fetch.unknown_kid_wait_seconds``, Envoy's header limits against authz's
``envoy`` section (without ``-c``: against its defaults, Envoy's own) and
against what authz reads at most, and
routes where ext_authz is disabled although authz's rules would not make the
request public (a request for the route's path or prefix, and for authz's own
route paths under it, with each method and each host of the virtual host, put
through authz's route matching). A ``direct_response`` or ``redirect`` route
reaches no upstream and is not reported.

A config dump is held to the same checks as a bootstrap: its static
listeners, its dynamic ones (from LDS) in their active and warming states, the
route configurations RDS delivered (an ``rds`` reference is resolved to one),
its clusters and its admin address. Said not checked instead: a draining
listener, an update Envoy rejected (``error_state``), an ``rds`` route config
the dump does not hold, and dump entries the checks do not read (ECDS filter
configs, secrets, scoped routes, endpoints) when they hold anything.

The package: ``yaml_nodes`` reads the file into YAML nodes that know their
lines; ``resources`` takes the listeners, clusters and route configurations
out of a bootstrap or a config dump; ``admin`` finds routes to Envoy's admin
interface; ``listeners``
checks each listener's HTTP connection manager, ``ext_authz`` the filter's
settings, ``routes`` the routes where the filter is off; ``report`` runs them
over the files and prints ``FILE:LINE: what: why``.

Not checked: in a bootstrap, resources Envoy loads at run time (LDS, RDS);
anywhere, filter settings from ECDS (``config_discovery``) and scoped routes,
routes matched by regex or URI template, ``:method`` or header matchers on
routes. Each place that names one of the first is printed as ``not checked``.
"""

from __future__ import annotations

from authz.envoy_check.base import TIMEOUT_MARGIN_SECONDS, Finding
from authz.envoy_check.report import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_UNREADABLE,
    check_file,
    check_text,
    run,
)
from authz.envoy_check.yaml_nodes import EnvoyCheckError

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "TIMEOUT_MARGIN_SECONDS",
    "EnvoyCheckError",
    "Finding",
    "check_file",
    "check_text",
    "run",
]
