"""The attack corpus: one named case per attack, with the answer it must get.

Each case builds a request (headers, optionally raw header bytes and a path)
from the key material of one test deployment. Cases named after an advisory
are its regression test. ``envoy=False`` marks requests that cannot be sent as
HTTP (raw bytes, duplicate headers): those run against the gRPC service only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import get_default_algorithms

from authz.dev.keys import public_jwk
from tests.support.forge import b64url

ISSUER = "https://idp.attack.test"
HMAC_ISSUER = "https://hmac.attack.test"
AUDIENCE = "api"
SECRET = b"0123456789abcdef0123456789abcdef-hmac-secret"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class Material:
    rsa: RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ed: Ed25519PrivateKey
    attacker: RSAPrivateKey
    jku_url: str  # a loopback server that must never be asked for anything

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                # No "alg": this RSA key may verify RS256 and PS256.
                {k: v for k, v in public_jwk(self.rsa, "rsa-1", "RS256").items() if k != "alg"},
                public_jwk(self.ec, "ec-1", "ES256"),
                public_jwk(self.ed, "ed-1", "EdDSA"),
            ]
        }


@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    path: str = "/"
    raw_headers: tuple[tuple[str, bytes], ...] = ()  # header_map form: duplicates, raw bytes


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Material], Request]
    status: int
    reason: str
    envoy: bool = True


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "scope": "read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def _json(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def sign(header: Any, payload: Any, alg: str, key: Any) -> str:
    signing_input = f"{b64url(_json(header))}.{b64url(_json(payload))}"
    signature = get_default_algorithms()[alg].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def with_signature(header: Any, payload: Any, signature: bytes) -> str:
    return f"{b64url(_json(header))}.{b64url(_json(payload))}.{b64url(signature)}"


def hs(header: Any, payload: Any, secret: bytes, digest: Any = hashlib.sha256) -> str:
    signing_input = f"{b64url(_json(header))}.{b64url(_json(payload))}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), digest).digest())}"


def bearer(token: str, path: str = "/") -> Request:
    return Request(headers={"authorization": f"Bearer {token}"}, path=path)


def rs(m: Material, header: dict[str, Any] | None = None, **overrides: Any) -> str:
    return sign(header or {"alg": "RS256", "kid": "rsa-1"}, claims(**overrides), "RS256", m.rsa)


def _pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _der(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _valid(m: Material) -> str:
    return rs(m)


def _replace_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def _der_ecdsa(m: Material) -> str:
    header = {"alg": "ES256", "kid": "ec-1"}
    signing_input = f"{b64url(_json(header))}.{b64url(_json(claims()))}"
    from cryptography.hazmat.primitives import hashes

    der = m.ec.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    return f"{signing_input}.{b64url(der)}"


def _ok(name: str, build: Callable[[Material], Request]) -> Case:
    return Case(name, build, 200, "allowed")


def _bad(name: str, build: Callable[[Material], Request], reason: str, **kw: Any) -> Case:
    return Case(name, build, 401, reason, **kw)


_NONE_SPELLINGS = ("none", "None", "NONE", "nOnE")
_LOOKALIKE_ISSUERS = {
    "prefix": ISSUER + "x",
    "substring": ISSUER[:-1],
    "uppercase": ISSUER.upper(),
    "trailing-slash": ISSUER + "/",
    "trailing-space": ISSUER + " ",
    "cyrillic-i": ISSUER.replace("idp", "\u0456dp"),
    "in-list": [ISSUER],
}
_LOOKALIKE_AUDIENCES = {
    "prefix": "ap",
    "longer": "apii",
    "uppercase": "API",
    "leading-space": " api",
    "cyrillic-a": "\u0430pi",
    "list-of-others": ["x", "ap"],
}
# Named by the advisory each is the regression test for, where there is one.
_CONFUSION_SECRETS: dict[str, Callable[[Material], bytes]] = {
    "CVE-2017-11424-rsa-pem": lambda m: _pem(m.rsa),
    "rsa-pem-no-trailing-newline": lambda m: _pem(m.rsa).rstrip(b"\n"),
    "rsa-der": lambda m: _der(m.rsa),
    "CVE-2016-10555-rsa-jwk": lambda m: json.dumps(public_jwk(m.rsa, "rsa-1", "RS256")).encode(),
    "whole-jwks": lambda m: json.dumps(m.jwks()).encode(),
    "ec-pem": lambda m: _pem(m.ec),
    "CVE-2022-29217-ed25519-pem": lambda m: _pem(m.ed),
    "ed25519-raw": lambda m: m.ed.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ),
}

CASES: list[Case] = [
    # Controls: the harness allows what it must, or no deny below means anything.
    _ok("control-rs256", lambda m: bearer(_valid(m))),
    _ok(
        "control-es256",
        lambda m: bearer(sign({"alg": "ES256", "kid": "ec-1"}, claims(), "ES256", m.ec)),
    ),
    _ok(
        "control-eddsa",
        lambda m: bearer(sign({"alg": "EdDSA", "kid": "ed-1"}, claims(), "EdDSA", m.ed)),
    ),
    _ok(
        "control-hs256",
        lambda m: bearer(hs({"alg": "HS256", "kid": "hs-1"}, claims(iss=HMAC_ISSUER), SECRET)),
    ),
    _ok("control-float-exp", lambda m: bearer(rs(m, exp=time.time() + 300.5))),
    _ok(
        "control-lowercase-scheme",
        lambda m: Request(headers={"authorization": f"bearer {_valid(m)}"}),
    ),
    # alg: none in every spelling (RFC 8725 §2.1, CVE-2015-9235).
    *[
        _bad(
            f"alg-{spelling}-unsigned",
            lambda m, s=spelling: bearer(  # type: ignore[misc]
                f"{b64url(_json({'alg': s, 'kid': 'rsa-1'}))}.{b64url(_json(claims()))}."
            ),
            "token_malformed",
        )
        for spelling in _NONE_SPELLINGS
    ],
    *[
        _bad(
            f"CVE-2015-9235-alg-{spelling}-with-a-real-signature",
            lambda m, s=spelling: bearer(  # type: ignore[misc]
                _replace_segment(_valid(m), 0, b64url(_json({"alg": s, "kid": "rsa-1"})))
            ),
            "algorithm_not_allowed",
        )
        for spelling in _NONE_SPELLINGS
    ],
    _bad(
        "alg-empty",
        lambda m: bearer(
            _replace_segment(_valid(m), 0, b64url(_json({"alg": "", "kid": "rsa-1"})))
        ),
        "algorithm_not_allowed",
    ),
    _bad(
        "alg-missing",
        lambda m: bearer(_replace_segment(_valid(m), 0, b64url(_json({"kid": "rsa-1"})))),
        "token_malformed",
    ),
    _bad(
        "alg-as-list",
        lambda m: bearer(
            _replace_segment(_valid(m), 0, b64url(_json({"alg": ["RS256"], "kid": "rsa-1"})))
        ),
        "token_malformed",
    ),
    # HMAC keyed with a public key (CVE-2016-10555, CVE-2017-11424, CVE-2022-29217).
    *[
        _bad(
            f"hs256-keyed-with-{name}"
            if not name.startswith("CVE")
            else f"{name[:14]}-hs256-keyed-with-{name[15:]}",
            lambda m, secret=secret: bearer(  # type: ignore[misc]
                hs({"alg": "HS256", "kid": "rsa-1"}, claims(), secret(m))
            ),
            "algorithm_not_allowed",
        )
        for name, secret in _CONFUSION_SECRETS.items()
    ],
    _bad(
        "hs512-keyed-with-rsa-pem-no-kid",
        lambda m: bearer(hs({"alg": "HS512"}, claims(), _pem(m.rsa), hashlib.sha512)),
        "algorithm_not_allowed",
    ),
    _bad(
        "hs256-keyed-with-rsa-pem-sent-to-the-hmac-issuer",
        lambda m: bearer(hs({"alg": "HS256", "kid": "hs-1"}, claims(iss=HMAC_ISSUER), _pem(m.rsa))),
        "signature_invalid",
    ),
    _bad(
        "hs256-with-an-rsa-kid-at-the-hmac-issuer",
        lambda m: bearer(
            hs({"alg": "HS256", "kid": "rsa-1"}, claims(iss=HMAC_ISSUER), _pem(m.rsa))
        ),
        "unknown_key",
    ),
    # Algorithm / key type mismatches.
    _bad(
        "rs256-header-naming-the-ec-key",
        lambda m: bearer(sign({"alg": "RS256", "kid": "ec-1"}, claims(), "RS256", m.rsa)),
        "algorithm_not_allowed",
    ),
    _bad(
        "es256-header-naming-the-rsa-key",
        lambda m: bearer(sign({"alg": "ES256", "kid": "rsa-1"}, claims(), "ES256", m.ec)),
        "algorithm_not_allowed",
    ),
    _bad(
        "eddsa-header-naming-the-rsa-key",
        lambda m: bearer(sign({"alg": "EdDSA", "kid": "rsa-1"}, claims(), "EdDSA", m.ed)),
        "algorithm_not_allowed",
    ),
    _bad(
        "es384-not-configured",
        lambda m: bearer(sign({"alg": "ES384", "kid": "ec-1"}, claims(), "ES256", m.ec)),
        "algorithm_not_allowed",
    ),
    _bad(
        "ps256-signature-under-an-rs256-header",
        lambda m: bearer(
            _replace_segment(
                sign({"alg": "PS256", "kid": "rsa-1"}, claims(), "PS256", m.rsa),
                0,
                b64url(_json({"alg": "RS256", "kid": "rsa-1"})),
            )
        ),
        "signature_invalid",
    ),
    # kid injection: looked up, never used as a path, query or code.
    *[
        _bad(
            f"kid-{name}",
            lambda m, kid=kid: bearer(  # type: ignore[misc]
                sign({"alg": "RS256", "kid": kid}, claims(), "RS256", m.rsa)
            ),
            reason,
            envoy=envoy,
        )
        for name, kid, reason, envoy in [
            ("path-traversal", "../../../../../dev/null", "unknown_key", True),
            ("sql", "x' OR '1'='1", "unknown_key", True),
            ("nul-suffix", "rsa-1\u0000", "unknown_key", True),
            ("newline-suffix", "rsa-1\n", "unknown_key", True),
            ("long", "k" * 2000, "unknown_key", True),
            ("integer", 1, "token_malformed", True),
            ("list", ["rsa-1"], "token_malformed", True),
            ("object", {"kid": "rsa-1"}, "token_malformed", True),
            ("null", None, "token_malformed", True),
        ]
    ],
    # Keys named or carried by the token itself are never trusted
    # (CVE-2018-0114 for jwk; jku/x5u would be SSRF and key injection).
    _bad(
        "CVE-2018-0114-jwk-header-with-the-attackers-key",
        lambda m: bearer(
            sign(
                {"alg": "RS256", "kid": "rsa-1", "jwk": public_jwk(m.attacker, "rsa-1", "RS256")},
                claims(),
                "RS256",
                m.attacker,
            )
        ),
        "signature_invalid",
    ),
    _bad(
        "jwk-header-without-kid",
        lambda m: bearer(
            sign(
                {"alg": "RS256", "jwk": public_jwk(m.attacker, "x", "RS256")},
                claims(),
                "RS256",
                m.attacker,
            )
        ),
        "signature_invalid",
    ),
    _bad(
        "jku-header-pointing-at-the-attacker",
        lambda m: bearer(
            sign(
                {"alg": "RS256", "kid": "attacker-1", "jku": m.jku_url + "/jwks.json"},
                claims(),
                "RS256",
                m.attacker,
            )
        ),
        "unknown_key",
    ),
    _bad(
        "x5u-header-pointing-at-the-attacker",
        lambda m: bearer(
            sign(
                {"alg": "RS256", "kid": "attacker-1", "x5u": m.jku_url + "/cert.pem"},
                claims(),
                "RS256",
                m.attacker,
            )
        ),
        "unknown_key",
    ),
    _bad(
        "x5c-header-with-the-attackers-certificate",
        lambda m: bearer(
            sign(
                {
                    "alg": "RS256",
                    "kid": "rsa-1",
                    "x5c": [base64.b64encode(_der(m.attacker)).decode()],
                },
                claims(),
                "RS256",
                m.attacker,
            )
        ),
        "signature_invalid",
    ),
    # Header parameters whose semantics are not implemented (RFC 7515 §4.1.11, RFC 7797).
    *[
        _bad(
            f"header-{name}",
            lambda m, extra=extra: bearer(  # type: ignore[misc]
                sign({"alg": "RS256", "kid": "rsa-1", **extra}, claims(), "RS256", m.rsa)
            ),
            "token_malformed",
        )
        for name, extra in [
            ("crit", {"crit": ["exp"], "exp": 1}),
            ("b64-false", {"b64": False, "crit": ["b64"]}),
            ("zip", {"zip": "DEF"}),
            ("enc", {"enc": "A256GCM"}),
        ]
    ],
    # ECDSA signature encodings (CVE-2022-21449 "psychic signatures").
    _bad(
        "CVE-2022-21449-es256-all-zero-signature",
        lambda m: bearer(with_signature({"alg": "ES256", "kid": "ec-1"}, claims(), bytes(64))),
        "signature_invalid",
    ),
    _bad(
        "es256-r-and-s-equal-to-the-curve-order",
        lambda m: bearer(
            with_signature(
                {"alg": "ES256", "kid": "ec-1"},
                claims(),
                P256_ORDER.to_bytes(32, "big") * 2,
            )
        ),
        "signature_invalid",
    ),
    _bad(
        "es256-der-encoded-signature",
        lambda m: bearer(_der_ecdsa(m)),
        "signature_invalid",
    ),
    _bad(
        "es256-der-encoded-zero-signature",
        lambda m: bearer(
            with_signature({"alg": "ES256", "kid": "ec-1"}, claims(), encode_dss_signature(0, 0))
        ),
        "signature_invalid",
    ),
    _bad(
        "es256-truncated-signature",
        lambda m: bearer(
            sign({"alg": "ES256", "kid": "ec-1"}, claims(), "ES256", m.ec).rsplit(".", 1)[0]
            + "."
            + b64url(bytes(63))
        ),
        "signature_invalid",
    ),
    _bad(
        "eddsa-all-zero-signature",
        lambda m: bearer(with_signature({"alg": "EdDSA", "kid": "ed-1"}, claims(), bytes(64))),
        "signature_invalid",
    ),
    # Tampering and malleability of the compact form.
    _bad("tampered-payload", lambda m: bearer(rs_tampered(m)), "signature_invalid"),
    _bad(
        "padded-signature",
        lambda m: bearer(_valid(m) + "=="),
        "token_malformed",
    ),
    _bad(
        "padded-header",
        lambda m: bearer(_padded_header(_valid(m))),
        "token_malformed",
    ),
    _bad(
        "non-canonical-signature-bits",
        lambda m: bearer(_with_noncanonical_signature(m)),
        "token_malformed",
    ),
    _bad(
        "standard-base64-alphabet",
        lambda m: bearer(_valid(m).replace("-", "+").replace("_", "/") + "+/"),
        "token_malformed",
    ),
    _bad("extra-segment", lambda m: bearer(_valid(m) + ".e30"), "token_malformed"),
    _bad("trailing-dot", lambda m: bearer(_valid(m) + "."), "token_malformed"),
    _bad("leading-dot", lambda m: bearer("." + _valid(m)), "token_malformed"),
    _bad("two-segments", lambda m: bearer(_valid(m).rsplit(".", 1)[0]), "token_malformed"),
    _bad("empty-signature", lambda m: bearer(_valid(m).rsplit(".", 1)[0] + "."), "token_malformed"),
    # Other serializations handed in as a token.
    _bad(
        "jwe-compact",
        lambda m: bearer(
            ".".join(
                b64url(_json(p))
                for p in ({"alg": "RSA-OAEP", "enc": "A256GCM"}, "k", "iv", "ct", "tag")
            )
        ),
        "token_malformed",
    ),
    # Its commas read as several credentials joined by Envoy: refused before parsing.
    Case(
        "jws-json-serialization",
        lambda m: bearer(
            json.dumps(
                {
                    "payload": _valid(m).split(".")[1],
                    "signatures": [
                        {"protected": _valid(m).split(".")[0], "signature": _valid(m).split(".")[2]}
                    ],
                }
            ).replace(" ", "")
        ),
        400,
        "multiple_credentials",
    ),
    _bad(
        "nested-jwt-as-payload",
        lambda m: bearer(
            sign({"alg": "RS256", "kid": "rsa-1", "cty": "JWT"}, _valid(m), "RS256", m.rsa)
        ),
        "token_malformed",
    ),
    # JSON parsing traps.
    _bad(
        "duplicate-alg-member",
        lambda m: bearer(
            sign(b'{"alg":"none","alg":"RS256","kid":"rsa-1"}', claims(), "RS256", m.rsa)
        ),
        "token_malformed",
    ),
    _bad(
        "duplicate-sub-member",
        lambda m: bearer(
            sign(
                {"alg": "RS256", "kid": "rsa-1"},
                json.dumps(claims())[:-1].encode() + b',"sub":"admin"}',
                "RS256",
                m.rsa,
            )
        ),
        "token_malformed",
    ),
    *[
        _bad(
            f"payload-{name}",
            lambda m, encode=encode: bearer(  # type: ignore[misc]
                sign({"alg": "RS256", "kid": "rsa-1"}, encode(json.dumps(claims())), "RS256", m.rsa)
            ),
            "token_malformed",
        )
        for name, encode in [
            ("utf-16", lambda text: text.encode("utf-16")),
            ("utf-16-le-no-bom", lambda text: text.encode("utf-16-le")),
            ("utf-32", lambda text: text.encode("utf-32")),
            ("utf-8-bom", lambda text: b"\xef\xbb\xbf" + text.encode()),
            ("invalid-utf-8", lambda text: text.encode()[:-1] + b'\xff"}'),
            ("nan", lambda text: text[:-1].encode() + b',"x":NaN}'),
            ("infinity", lambda text: text[:-1].encode() + b',"x":-Infinity}'),
            ("array", lambda text: b"[" + text.encode() + b"]"),
            ("string", lambda text: json.dumps(text).encode()),
            ("huge-integer", lambda text: text[:-1].encode() + b',"n":' + b"9" * 5000 + b"}"),
            ("deep-nesting", lambda text: b"[" * 1500 + b"]" * 1500),
        ]
    ],
    # Claim types (signed correctly: only the checks stand between them and an allow).
    *[
        _bad(
            f"claim-{name}",
            lambda m, overrides=overrides: bearer(rs(m, **overrides)),  # type: ignore[misc]
            reason,
        )
        for name, overrides, reason in [
            ("exp-numeric-string", {"exp": "9999999999"}, "claim_invalid"),
            ("exp-boolean", {"exp": True}, "claim_invalid"),
            ("exp-1e20", {"exp": 10**20}, "claim_invalid"),
            ("exp-10-to-the-400", {"exp": 10**400}, "claim_invalid"),
            ("exp-float-1e300", {"exp": 1e300}, "claim_invalid"),
            ("exp-negative", {"exp": -1}, "claim_invalid"),
            ("exp-array", {"exp": [9999999999]}, "claim_invalid"),
            ("exp-null", {"exp": None}, "missing_claim"),
            ("exp-missing", {"exp": _DROP}, "missing_claim"),
            ("nbf-numeric-string", {"nbf": "0"}, "claim_invalid"),
            ("iat-numeric-string", {"iat": "0"}, "claim_invalid"),
            ("aud-number", {"aud": 1}, "claim_invalid"),
            ("aud-empty-list", {"aud": []}, "claim_invalid"),
            ("aud-list-of-numbers", {"aud": [1]}, "claim_invalid"),
            ("aud-nested-list", {"aud": [[AUDIENCE]]}, "claim_invalid"),
            ("aud-null", {"aud": None}, "missing_claim"),
            ("iss-number", {"iss": 1}, "claim_invalid"),
            ("iss-missing", {"iss": _DROP}, "missing_claim"),
            ("sub-object", {"sub": {"id": "admin"}}, "claim_invalid"),
            # A jti the revocation list ("jti:123", strings) could never match.
            ("jti-number", {"jti": 123}, "claim_invalid"),
            ("jti-object", {"jti": {"a": 1}}, "claim_invalid"),
            # A string that is not Unicode: no header, record or log could carry
            # it (identity values that are arrive percent-encoded:
            # IDENTITY_INJECTIONS below).
            ("sub-lone-surrogate", {"sub": "\udc80"}, "token_malformed"),
            ("nested-lone-surrogate", {"org": {"\ud800x": 1}}, "token_malformed"),
            ("expired", {"exp": int(time.time()) - 3600, "iat": 1}, "token_expired"),
            ("not-yet-valid", {"nbf": int(time.time()) + 3600}, "token_not_yet_valid"),
            ("issued-in-the-future", {"iat": int(time.time()) + 3600}, "issued_in_future"),
        ]
    ],
    # Issuer and audience look-alikes: comparisons are exact (CVE-2024-53861).
    *[
        _bad(
            f"CVE-2024-53861-iss-{name}" if name in ("substring", "in-list") else f"iss-{name}",
            lambda m, iss=iss: bearer(rs(m, iss=iss)),  # type: ignore[misc]
            "claim_invalid" if isinstance(iss, list) else "unknown_issuer",
        )
        for name, iss in _LOOKALIKE_ISSUERS.items()
    ],
    *[
        _bad(
            f"aud-{name}",
            lambda m, aud=aud: bearer(rs(m, aud=aud)),  # type: ignore[misc]
            "audience_mismatch",
        )
        for name, aud in _LOOKALIKE_AUDIENCES.items()
    ],
    # Credential placement (RFC 6750).
    Case(
        "two-authorization-headers",
        lambda m: Request(
            headers={},
            raw_headers=(
                ("authorization", f"Bearer {_valid(m)}".encode()),
                ("authorization", f"Bearer {_valid(m)}".encode()),
            ),
        ),
        400,
        "multiple_credentials",
        envoy=False,
    ),
    Case(
        "two-credentials-in-one-header",
        lambda m: Request(headers={"authorization": f"Bearer {_valid(m)}, Bearer {_valid(m)}"}),
        400,
        "multiple_credentials",
    ),
    Case(
        "token-in-header-and-query",
        lambda m: bearer(_valid(m), path=f"/orders?access_token={_valid(m)}"),
        400,
        "multiple_credentials",
    ),
    Case(
        "token-in-query-only",
        lambda m: Request(headers={}, path=f"/orders?access_token={_valid(m)}"),
        401,
        "missing_token",
    ),
    Case(
        "basic-scheme",
        lambda m: Request(headers={"authorization": "Basic YTpi"}),
        401,
        "missing_token",
    ),
    Case(
        "bearer-without-token",
        lambda m: Request(headers={"authorization": "Bearer"}),
        400,
        "invalid_request",
    ),
    Case(
        "whitespace-inside-the-token",
        lambda m: Request(headers={"authorization": "Bearer " + _valid(m).replace(".", ". ", 1)}),
        400,
        "invalid_request",
    ),
    _bad(
        "token-over-the-size-limit",
        lambda m: bearer(rs(m, padding="x" * 9000)),
        "token_too_large",
    ),
    # Size limits of our own, behind Envoy's (which would answer first through it).
    Case(
        "too-many-headers",
        lambda m: Request(
            headers={},
            raw_headers=(
                ("authorization", f"Bearer {_valid(m)}".encode()),
                *((f"x-filler-{n}", b"x") for n in range(250)),
            ),
        ),
        431,
        "request_too_large",
        envoy=False,
    ),
    Case(
        "oversized-headers",
        lambda m: Request(
            headers={"authorization": f"Bearer {_valid(m)}", "x-filler": "x" * 70_000}
        ),
        431,
        "request_too_large",
        envoy=False,
    ),
    _bad(
        "non-ascii-byte-in-the-token",
        lambda m: Request(
            headers={}, raw_headers=(("authorization", b"Bearer " + _valid(m).encode() + b"\xff"),)
        ),
        "token_malformed",
        envoy=False,
    ),
]


def rs_tampered(m: Material) -> str:
    token = _valid(m)
    return _replace_segment(token, 1, b64url(_json(claims(sub="admin"))))


def _padded_header(token: str) -> str:
    header = token.split(".", maxsplit=1)[0]
    padding = "=" * (-len(header) % 4) or "===="
    return _replace_segment(token, 0, header + padding)


def _with_noncanonical_signature(m: Material) -> str:
    token = _valid(m)
    signature = token.split(".")[2]
    # RS256 with a 2048-bit key: 256 bytes -> 342 characters, the last carrying
    # 4 unused bits; setting one keeps the bytes, changes the spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last & 0b1111 == 0
    return _replace_segment(token, 2, signature[:-1] + alphabet[last | 1])


# Identity values the upstream could read otherwise than the rules did: each is
# carried percent-encoded, so the upstream reads exactly the verified value and
# nothing else (no extra header, no trimmed or re-split value).
IDENTITY_INJECTIONS: dict[str, str] = {
    "sub-padded": " alice ",
    "sub-line-break": "alice\r\nx-auth-roles: admin",
    "sub-non-ascii": "alic\u00e9",
    "sub-comma": "alice,admin",
    "sub-percent": "alice%0D%0Ax-auth-roles: admin",
}
