"""Property tests of DPoP proofs: whatever arrives in a DPoP header, the verifier
answers with a proof or with one of its own refusals (never a crash, never
InternalError), and accepts exactly the proofs the rules, stated here on
their own, accept. ``make fuzz`` runs these with many more examples."""

from __future__ import annotations

import json
import string
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import event, given
from hypothesis import strategies as st

from authz.check.dpop import DpopProof, DpopVerifier
from authz.check.nonce import NonceIssuer
from authz.check.replay import MemoryReplayStore
from authz.dev.dpop_client import Signer, access_token_hash, b64, jws, proof
from authz.errors import AuthzError, DpopNonceRequired, InvalidDpopProof
from tests.support.clock import FakeClock

NOW = 1_800_000_000.0
URI = "https://api.example.com/orders/7"
TOKEN = "access-token-value"
B64URL = string.ascii_letters + string.digits + "-_"
SIGNER = Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")
OTHER = Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")
NONCES = NonceIssuer(b"k" * 32, 60)


def _verifier(nonces: bool = False) -> DpopVerifier:
    clock = FakeClock(NOW)
    return DpopVerifier(
        replay=MemoryReplayStore(100, clock), clock=clock, nonces=NONCES if nonces else None
    )


def _outcome(verifier: DpopVerifier, values: list[str], **request: Any) -> DpopProof | AuthzError:
    """The proof, or the refusal; anything else escaping fails the property."""
    request.setdefault("method", "GET")
    request.setdefault("uri", URI)
    try:
        return verifier.verify(values, **request)
    except (InvalidDpopProof, DpopNonceRequired) as error:
        return error


@given(
    values=st.lists(st.text(alphabet=st.characters(), max_size=300), max_size=3),
    nonces=st.booleans(),
)
def test_any_header_text_is_refused_cleanly(values: list[str], nonces: bool) -> None:
    outcome = _outcome(_verifier(nonces), values)
    assert isinstance(outcome, AuthzError)
    assert outcome.detail != outcome.reason  # the detail names the failed check


@given(
    header=st.binary(max_size=300) | st.text(max_size=300),
    payload=st.binary(max_size=300) | st.text(max_size=300),
    signature=st.binary(max_size=80),
)
def test_any_segments_are_refused_cleanly(
    header: bytes | str, payload: bytes | str, signature: bytes
) -> None:
    value = jws(header, payload, None) + b64(signature)
    assert isinstance(_outcome(_verifier(), [value]), AuthzError)


_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.sampled_from(B64URL + ".=,")),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(B64URL + ".=, ")),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("swap"), st.integers(0, 2), st.integers(0, 2)),
)


def _mutate(value: str, mutation: tuple[str, Any, Any]) -> str:
    kind, a, b = mutation
    if kind == "swap":
        parts = value.split(".")
        if max(a, b) >= len(parts):
            return value
        parts[a], parts[b] = parts[b], parts[a]
        return ".".join(parts)
    index = a % (len(value) + 1)
    if kind == "replace":
        return value[:index] + str(b) + value[index + 1 :]
    if kind == "insert":
        return value[:index] + str(b) + value[index:]
    return value[:index] + value[index + 1 :]


@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_a_mutated_proof_is_never_accepted(mutations: list[tuple[str, Any, Any]]) -> None:
    original = proof(SIGNER, iat=NOW, htu=URI, jti="fixed", access_token=TOKEN)
    value = original
    for mutation in mutations:
        value = _mutate(value, mutation)
    outcome = _outcome(_verifier(), [value], access_token=TOKEN, expected_jkt=SIGNER.thumbprint())
    assert isinstance(outcome, DpopProof) == (value == original), outcome


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=5,
)
_ABSENT = object()


def _member(valid: Any, *others: Any) -> st.SearchStrategy[Any]:
    """Mostly the valid value, so that whole proofs are often valid and each
    check is often the one that fails; else absent, a near miss, or any JSON."""
    wrong = st.one_of(st.just(_ABSENT), st.sampled_from(others), _json)
    return st.integers(0, 9).flatmap(lambda n: st.just(valid) if n < 7 else wrong)


_headers = st.fixed_dictionaries(
    {
        "typ": _member("dpop+jwt", "DPoP+jwt", "jwt"),
        "alg": _member("ES256", "none", "HS256", "ES384", "RS256"),
        "jwk": _member(
            SIGNER.public_jwk(), OTHER.public_jwk(), SIGNER.private_jwk(), {"kty": "EC"}
        ),
        "crit": _member(_ABSENT, ["exp"]),
    }
)
_claims = st.fixed_dictionaries(
    {
        "jti": _member("a-jti", "", "j" * 257, 17),
        "htm": _member("GET", "POST", "get"),
        "htu": _member(
            URI,
            "HTTPS://api.example.com:443/orders/./7?x=1#f",
            "https://api.example.com/orders/8",
            "https://api.example.com/orders/%37",
            "http://api.example.com/orders/7",
        ),
        "iat": _member(NOW, NOW - 60, NOW + 5, NOW - 61, NOW + 6, "1800000000", True),
        "ath": _member(access_token_hash(TOKEN), access_token_hash("other"), 5),
    }
)


def _should_accept(header: dict[str, Any], claims: dict[str, Any]) -> bool:
    """The rules of RFC 9449 §4.3 for these members, written independently."""
    jti = claims.get("jti")
    iat = claims.get("iat")
    return (
        header.get("typ") == "dpop+jwt"
        and header.get("alg") == "ES256"
        and header.get("jwk") == SIGNER.public_jwk()
        and "crit" not in header
        and isinstance(jti, str)
        and 1 <= len(jti) <= 256
        and claims.get("htm") == "GET"
        and claims.get("htu")
        in (
            URI,
            "HTTPS://api.example.com:443/orders/./7?x=1#f",
            "https://api.example.com/orders/%37",
        )
        and isinstance(iat, int | float)
        and not isinstance(iat, bool)
        and NOW - 60 <= iat <= NOW + 5
        and claims.get("ath") == access_token_hash(TOKEN)
    )


@given(header=_headers, claims=_claims)
def test_signed_proofs_are_accepted_exactly_when_valid(
    header: dict[str, Any], claims: dict[str, Any]
) -> None:
    header = {name: value for name, value in header.items() if value is not _ABSENT}
    claims = {name: value for name, value in claims.items() if value is not _ABSENT}
    value = jws(json.dumps(header), json.dumps(claims), SIGNER)
    outcome = _outcome(_verifier(), [value], access_token=TOKEN, expected_jkt=SIGNER.thumbprint())
    # make fuzz's statistics show that both answers, and every refusal, were reached.
    event("accepted" if isinstance(outcome, DpopProof) else outcome.reason)
    assert isinstance(outcome, DpopProof) == _should_accept(header, claims), outcome
