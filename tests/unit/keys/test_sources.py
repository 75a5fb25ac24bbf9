"""keys: each key is bound to the algorithms both its type and the issuer allow."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.keys import public_jwk
from authz.errors import ConfigError
from authz.keys.sources import IssuerKeys, VerificationKey, compatible_algorithms
from tests.support.doubles import StaticKeySource, load_issuer_keys

ISSUER = "https://idp.example"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _config(tmp_path: Path, algorithms: str, keys: str) -> Config:
    text = (
        "issuers:\n"
        f"  - issuer: {ISSUER}\n"
        "    audiences: [api]\n"
        f"    algorithms: [{algorithms}]\n"
        "    keys:\n"
        f"{keys}"
    )
    return parse_config(text, source="test.yaml", base_dir=tmp_path)


def _load(tmp_path: Path, algorithms: str, keys: str) -> IssuerKeys:
    config = _config(tmp_path, algorithms, keys)
    return load_issuer_keys(config.issuers[0], config)


def _jwk(key: PrivateKey, kid: str, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    jwk = public_jwk(key, kid, alg or "RS256")
    if alg is None:
        del jwk["alg"]
    jwk.update(extra)
    return jwk


def _write_jwks(tmp_path: Path, *jwks: dict[str, Any]) -> str:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": list(jwks)}), encoding="utf-8")
    return "      - jwks_file: jwks.json\n"


def _write_pem(tmp_path: Path, key: PrivateKey, name: str = "key.pem") -> Path:
    data = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- JWKS --------------------------------------------------------------------


def test_jwks_keys_are_bound_to_their_algorithms(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    ed25519_key: ed25519.Ed25519PrivateKey,
) -> None:
    source = _write_jwks(
        tmp_path,
        _jwk(rsa_key, "rsa"),
        _jwk(ec256_key, "p256"),
        _jwk(ec384_key, "p384"),
        _jwk(ed25519_key, "ed"),
    )
    keys = _load(tmp_path, "RS256, PS384, ES256, ES384, EdDSA", source)
    assert keys.without_kid == ()
    assert set(keys.by_kid) == {"rsa", "p256", "p384", "ed"}
    assert keys.by_kid["rsa"].algorithms == {"RS256", "PS384"}
    assert keys.by_kid["rsa"].kind == "RSA-2048"
    assert keys.by_kid["p256"].algorithms == {"ES256"}
    assert keys.by_kid["p384"].algorithms == {"ES384"}
    assert keys.by_kid["ed"].algorithms == {"EdDSA"}
    assert keys.by_kid["ed"].kind == "Ed25519"
    assert isinstance(keys.by_kid["rsa"].key, rsa.RSAPublicKey)
    assert isinstance(keys.by_kid["p384"].key, ec.EllipticCurvePublicKey)
    assert keys.usable


def test_key_algorithms_are_the_intersection_with_the_issuer(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec256_key: ec.EllipticCurvePrivateKey
) -> None:
    # The issuer allows RS256 only; the RSA key could do PS* too, the EC key nothing.
    source = _write_jwks(tmp_path, _jwk(rsa_key, "rsa"), _jwk(ec256_key, "p256"))
    keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"rsa"}
    assert keys.by_kid["rsa"].algorithms == {"RS256"}


def test_jwk_alg_narrows_the_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_key, "rsa", "PS256"))
    keys = _load(tmp_path, "RS256, PS256", source)
    assert keys.by_kid["rsa"].algorithms == {"PS256"}


def test_jwk_alg_outside_the_issuer_algorithms_skips_the_key(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key_b: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_key, "ps", "PS512"), _jwk(rsa_key_b, "rs", "RS256"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"rs"}
    assert "keys[0]" in caplog.text
    assert "'PS512'" in caplog.text


def test_weak_rsa_key_in_a_jwks_is_skipped_with_a_warning(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    rsa_1024_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_1024_key, "weak"), _jwk(rsa_key, "strong"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"strong"}
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "keys[0]" in record.getMessage()
    assert "RSA key is 1024 bits; at least 2048 needed" in record.getMessage()


def test_weak_rsa_key_as_the_only_key_is_a_config_error(
    tmp_path: Path, rsa_1024_key: rsa.RSAPrivateKey
) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_1024_key, "weak"))
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", source)
    assert str(info.value) == f"issuer '{ISSUER}': no usable key for algorithms ['RS256']"


def test_weak_rsa_pem_is_a_config_error(tmp_path: Path, rsa_1024_key: rsa.RSAPrivateKey) -> None:
    path = _write_pem(tmp_path, rsa_1024_key)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - pem_file: key.pem\n")
    assert str(path) in str(info.value)
    assert "RSA key is 1024 bits; at least 2048 needed" in str(info.value)


def test_jwk_with_private_members_is_skipped_and_not_logged(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key_b: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    private = rsa_key.private_numbers()
    secret_d = "private-exponent-" + format(private.d, "x")[:24]
    leaky = _jwk(rsa_key, "leaky", d=secret_d)
    source = _write_jwks(tmp_path, leaky, _jwk(rsa_key_b, "good"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"good"}
    assert "private key members ['d']" in caplog.text
    assert secret_d not in caplog.text


@pytest.mark.parametrize("use", ["enc", "", "SIG"])
def test_jwk_not_for_signatures_is_skipped(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key_b: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
    use: str,
) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_key, "enc", use=use), _jwk(rsa_key_b, "sig"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"sig"}
    assert f"use is {use!r}, not 'sig'" in caplog.text


def test_jwk_without_use_is_accepted(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = _jwk(rsa_key, "rsa")
    del jwk["use"]
    keys = _load(tmp_path, "RS256", _write_jwks(tmp_path, jwk))
    assert set(keys.by_kid) == {"rsa"}


def test_symmetric_jwk_in_a_jwks_is_skipped(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    oct_jwk = {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNoYXJlZC1rZXktbWF0ZXJpYWwtMTIzNDU2"}
    source = _write_jwks(tmp_path, oct_jwk, _jwk(rsa_key, "rsa"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"rsa"}
    assert "symmetric keys are accepted only from a secret_file" in caplog.text
    assert oct_jwk["k"] not in caplog.text


def test_k_member_on_an_asymmetric_jwk_is_private_material(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key_b: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_key, "odd", k="AAAA"), _jwk(rsa_key_b, "good"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"good"}
    assert "private key members ['k']" in caplog.text


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"kid": ""}, "kid must be a non-empty string"),
        ({"kid": 7}, "kid must be a non-empty string"),
        ({"alg": 256}, "alg must be a string"),
        ({"alg": "ES256"}, "not a valid JWK"),
        ({"alg": "XS999"}, "not a valid JWK"),
        ({"kty": "EC"}, "not a valid JWK"),
        ({"n": 12345}, "not a valid JWK"),
    ],
)
def test_broken_jwk_is_skipped(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, Any],
    problem: str,
) -> None:
    source = _write_jwks(tmp_path, {**_jwk(rsa_key, "bad"), **change}, _jwk(rsa_key, "good"))
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"good"}
    assert problem in caplog.text


def test_jwk_with_alg_none_is_skipped(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key_b: rsa.RSAPrivateKey
) -> None:
    source = _write_jwks(tmp_path, _jwk(rsa_key, "none", "none"), _jwk(rsa_key_b, "good"))
    keys = _load(tmp_path, "RS256", source)
    assert set(keys.by_kid) == {"good"}


def test_jwk_that_is_not_an_object_is_skipped(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": ["not a key", _jwk(rsa_key, "rsa")]}), encoding="utf-8"
    )
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", "      - jwks_file: jwks.json\n")
    assert set(keys.by_kid) == {"rsa"}
    assert "a JWK must be an object" in caplog.text


@pytest.mark.parametrize("document", [[], {"keys": {}}, {"key": []}, "keys"])
def test_jwks_document_must_be_an_object_with_keys(tmp_path: Path, document: Any) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - jwks_file: jwks.json\n")
    assert "a JWKS must be an object with a 'keys' array" in str(info.value)
    assert "keys[0] (jwks_file jwks.json)" in str(info.value)


def test_empty_jwks_is_no_usable_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", _write_jwks(tmp_path))
    assert "no usable key" in str(info.value)


def test_inline_jwks(tmp_path: Path, ec256_key: ec.EllipticCurvePrivateKey) -> None:
    inline = json.dumps({"keys": [_jwk(ec256_key, "inline", "ES256")]})
    keys = _load(tmp_path, "ES256", f"      - jwks: {inline}\n")
    assert keys.by_kid["inline"].algorithms == {"ES256"}


def test_duplicate_kid_keeps_the_first(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key_b: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _write_pem(tmp_path, rsa_key_b, "b.pem")
    source = _write_jwks(tmp_path, _jwk(rsa_key, "same")) + (
        "      - pem_file: b.pem\n        kid: same\n"
    )
    with caplog.at_level(logging.WARNING, logger="authz.keys.sources"):
        keys = _load(tmp_path, "RS256", source)
    kept = keys.by_kid["same"].key
    assert isinstance(kept, rsa.RSAPublicKey)
    assert kept.public_numbers() == rsa_key.public_key().public_numbers()
    assert "duplicate kid 'same' skipped" in caplog.text


# --- files -------------------------------------------------------------------


def test_missing_jwks_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - jwks_file: missing.json\n")
    assert str(info.value) == f"{tmp_path / 'missing.json'}: cannot read: No such file or directory"


@pytest.mark.parametrize(
    ("algorithms", "source"),
    [
        ("RS256", "      - pem_file: missing.pem\n"),
        ("HS256", "      - secret_file: missing.pem\n"),
    ],
)
def test_missing_key_file_names_the_path(tmp_path: Path, algorithms: str, source: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, algorithms, source)
    assert str(info.value) == f"{tmp_path / 'missing.pem'}: cannot read: No such file or directory"


@pytest.mark.parametrize("content", [b"{not json", b'{"keys": [}', b"\xff\xfe{}"])
def test_invalid_json_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "jwks.json").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - jwks_file: jwks.json\n")
    assert str(info.value).startswith(f"{tmp_path / 'jwks.json'}: not valid JSON: ")


def test_pem_public_key_with_kid(tmp_path: Path, ec256_key: ec.EllipticCurvePrivateKey) -> None:
    _write_pem(tmp_path, ec256_key)
    keys = _load(tmp_path, "ES256", "      - pem_file: key.pem\n        kid: ec-1\n")
    assert set(keys.by_kid) == {"ec-1"}
    assert keys.by_kid["ec-1"].algorithms == {"ES256"}
    assert keys.without_kid == ()


def test_pem_public_key_without_kid(tmp_path: Path, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
    _write_pem(tmp_path, ed25519_key)
    keys = _load(tmp_path, "EdDSA", "      - pem_file: key.pem\n")
    assert keys.by_kid == {}
    [key] = keys.without_kid
    assert key.kid is None
    assert key.algorithms == {"EdDSA"}
    assert keys.all() == (key,)


@pytest.mark.parametrize("private_format", ["pkcs8", "traditional"])
def test_pem_private_key_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, private_format: str
) -> None:
    formats = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }
    path = tmp_path / "key.pem"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, formats[private_format], serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - pem_file: key.pem\n")
    assert str(info.value) == f"{path}: holds a private key; give the public key only"


def test_pem_that_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text(
        "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - pem_file: key.pem\n")
    assert str(info.value).startswith(f"{tmp_path / 'key.pem'}: not a PEM public key")


def test_key_type_that_cannot_verify_any_configured_algorithm(
    tmp_path: Path, ec256_key: ec.EllipticCurvePrivateKey
) -> None:
    path = _write_pem(tmp_path, ec256_key)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "RS256", "      - pem_file: key.pem\n")
    message = str(info.value)
    assert str(path) in message
    assert "a EC-secp256r1 key cannot verify any of the issuer's algorithms ['RS256']" in message


def test_ec_curve_mismatch_cannot_verify(
    tmp_path: Path, ec384_key: ec.EllipticCurvePrivateKey
) -> None:
    # A P-384 key is an ES384 key only; ES256 must not accept it.
    _write_pem(tmp_path, ec384_key)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "ES256", "      - pem_file: key.pem\n")
    assert "cannot verify any of the issuer's algorithms ['ES256']" in str(info.value)


def test_secret_file(tmp_path: Path, hmac_secret: bytes) -> None:
    (tmp_path / "hs.key").write_bytes(hmac_secret)
    keys = _load(tmp_path, "HS256, HS512", "      - secret_file: hs.key\n        kid: hs\n")
    key = keys.by_kid["hs"]
    assert key.key == hmac_secret
    assert key.kind == "oct"
    assert key.algorithms == {"HS256", "HS512"}


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\n\n"])
def test_secret_trailing_newline_is_stripped(tmp_path: Path, ending: bytes) -> None:
    secret = b"s" * 32
    (tmp_path / "hs.key").write_bytes(secret + ending)
    keys = _load(tmp_path, "HS256", "      - secret_file: hs.key\n")
    [key] = keys.without_kid
    assert key.key == secret


def test_secret_shorter_than_32_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hs.key"
    # 31 bytes once the newline is stripped: the newline must not count.
    path.write_bytes(b"s" * 31 + b"\n")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "HS256", "      - secret_file: hs.key\n")
    message = str(info.value)
    assert str(path) in message
    assert "HMAC secret is 31 bytes; at least 32 needed" in message
    assert "sss" not in message


def test_errors_name_the_issuer_and_key_source(tmp_path: Path) -> None:
    (tmp_path / "hs.key").write_bytes(b"short")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "HS256", "      - secret_file: hs.key\n")
    assert str(info.value).startswith(f"issuer '{ISSUER}' keys[0] (secret_file hs.key): ")


# --- compatible_algorithms and StaticKeySource --------------------------------


def test_compatible_algorithms_by_key_type(
    rsa_key: rsa.RSAPrivateKey, ec256_key: ec.EllipticCurvePrivateKey
) -> None:
    rsa_kind, rsa_algs = compatible_algorithms(rsa_key.public_key())
    assert rsa_kind == "RSA-2048"
    assert rsa_algs == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert compatible_algorithms(ec256_key.public_key())[1] == {"ES256"}
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key()
    assert compatible_algorithms(p521)[1] == {"ES512"}
    ed = ed448.Ed448PrivateKey.generate().public_key()
    assert compatible_algorithms(ed) == ("Ed448", frozenset({"EdDSA"}))
    assert compatible_algorithms(b"k" * 32) == ("oct", frozenset({"HS256", "HS384", "HS512"}))


def test_compatible_algorithms_refuses_unsupported_curves() -> None:
    secp256k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(ValueError, match="EC curve secp256k1 is not supported"):
        compatible_algorithms(secp256k1)


def test_static_key_source_from_config(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec256_key: ec.EllipticCurvePrivateKey
) -> None:
    _write_pem(tmp_path, rsa_key, "a.pem")
    _write_pem(tmp_path, ec256_key, "b.pem")
    text = """\
issuers:
  - issuer: https://a.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{pem_file: a.pem, kid: a}]
  - issuer: https://b.example
    audiences: [api]
    algorithms: [ES256]
    keys: [{pem_file: b.pem}]
"""
    config = parse_config(text, source="test.yaml", base_dir=tmp_path)
    source = StaticKeySource.from_config(config)
    assert source.ready()
    a = source.keys_for("https://a.example")
    b = source.keys_for("https://b.example")
    assert a is not None
    assert set(a.by_kid) == {"a"}
    assert b is not None
    assert len(b.without_kid) == 1
    assert source.keys_for("https://c.example") is None


def test_static_key_source_is_not_ready_with_an_empty_issuer(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    key = VerificationKey(
        kid="k", kind="RSA-2048", algorithms=frozenset({"RS256"}), key=rsa_key.public_key()
    )
    good = IssuerKeys(by_kid={"k": key}, without_kid=())
    empty = IssuerKeys(by_kid={}, without_kid=())
    assert StaticKeySource({"a": good}).ready()
    assert not StaticKeySource({"a": good, "b": empty}).ready()
    assert not empty.usable
    assert StaticKeySource({}).keys_for("a") is None


def test_static_key_source_from_config_fails_on_an_unusable_issuer(
    tmp_path: Path, rsa_1024_key: rsa.RSAPrivateKey
) -> None:
    config = _config(tmp_path, "RS256", _write_jwks(tmp_path, _jwk(rsa_1024_key, "weak")))
    with pytest.raises(ConfigError, match="no usable key"):
        StaticKeySource.from_config(config)


def test_verification_key_repr_hides_the_key(hmac_secret: bytes) -> None:
    key = VerificationKey(kid="hs", kind="oct", algorithms=frozenset({"HS256"}), key=hmac_secret)
    assert hmac_secret.decode() not in repr(key)
