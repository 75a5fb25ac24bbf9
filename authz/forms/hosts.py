"""Request hosts (``Host`` / ``:authority``) as the upstream reads them, or refused.

``normalize_host`` reads ``:authority`` as an upstream does (lower case, the
port and one trailing dot dropped) and refuses (400 ``invalid_host``) what
readers disagree on: userinfo (``evil@admin.shop.local``), an empty or
non-numeric port, an escape, an empty label, and any character a DNS name or
an IP literal cannot have.
"""

from __future__ import annotations

import functools
import re

from authz.errors import InvalidHost

__all__ = ["normalize_host"]

_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?")
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")


# A handful of hosts come again and again: each is read once. A refused host
# raises every time (lru_cache keeps no exception).
@functools.lru_cache(maxsize=1024)
def normalize_host(raw: str) -> str:
    """``Host``/``:authority`` as the upstream reads it, or InvalidHost.

    Lower case, without the port and one trailing dot; "" stays "".
    """
    if not raw:
        return ""
    if len(raw) > 255 + 6:
        raise InvalidHost("host is longer than 261 characters")
    host = raw.lower()
    if not host.isascii():
        raise InvalidHost("host has non-ASCII characters")
    if "@" in host:
        raise InvalidHost("host has userinfo ('@')")
    if host.startswith("["):
        close = host.find("]")
        name, rest = host[: close + 1], host[close + 1 :]
        if close == -1 or not _IPV6.fullmatch(name):
            raise InvalidHost("host is not a valid IPv6 literal")
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
    if rest and (
        not rest.startswith(":") or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > 65535
    ):
        raise InvalidHost("host has an empty, non-numeric or out-of-range port")
    if name.startswith("["):
        return name
    if name.endswith("."):
        name = name[:-1]
    if not name or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidHost("host is not a DNS name or IP address")
    return name
