"""Key formats (vkey, signer key, PEM), key rings and rotation semantics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proofs.keys import (
    KeyFormatError,
    KeyRing,
    PublicKey,
    Signer,
    generate_key,
    load_keyring,
    load_signer,
    parse_signer_key,
)

VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"


def test_generate_key_round_trips_through_both_texts(tmp_path) -> None:
    private_text, vkey = generate_key("erasure.example.org/audit-2025")
    assert private_text.startswith("PRIVATE+KEY+erasure.example.org/audit-2025+")
    key_file = tmp_path / "audit.key"
    key_file.write_text(private_text + "\n")
    signer = load_signer(key_file)
    assert signer.public_key == PublicKey.from_vkey(vkey)
    assert signer.public_key.verify(signer.sign(b"m"), b"m")
    assert "PRIVATE" not in repr(signer) and private_text.split("+", 4)[4] not in repr(signer)  # base64 may hold "+"


def test_pem_pkcs8_key_needs_a_name(tmp_path) -> None:
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "k.pem").write_bytes(pem)
    with pytest.raises(KeyFormatError, match="name"):
        load_signer(tmp_path / "k.pem")
    signer = load_signer(tmp_path / "k.pem", name="log-key")
    assert signer.public_key.verify(private_key.sign(b"m"), b"m")


@pytest.mark.parametrize(
    "bad",
    [
        VKEY.replace("c74f20a3", "c74f20a4"),  # key id does not match
        VKEY.replace("PeterNeumann", "Peter Neumann"),  # whitespace in name
        VKEY.replace("+ARpc", "+Apc"),  # not 0x01 || 32 bytes
        VKEY.replace("ARpc", "AhJc"),  # algorithm byte 0x02
        VKEY[:-1] + "X",  # non-canonical base64 last character
        VKEY + "+x",  # extra field
        "PeterNeumann+c74f20a3",
    ],
)
def test_bad_vkeys_are_refused(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        PublicKey.from_vkey(bad)


def test_signer_key_with_wrong_id_or_name_is_refused() -> None:
    text, _ = generate_key("a")
    prefix, _, rest = text.rpartition("+")
    with pytest.raises(KeyFormatError, match="does not match"):
        parse_signer_key(text.replace("PRIVATE+KEY+a+", "PRIVATE+KEY+b+"))
    with pytest.raises(KeyFormatError, match="expected"):
        parse_signer_key(text, name="b")
    with pytest.raises(KeyFormatError):
        parse_signer_key("not a key")


def test_rotation_keeps_old_keys_published_and_retires_them(tmp_path) -> None:
    old = Signer.from_seed("log-2024", b"\x01" * 32)
    new = Signer.from_seed("log-2025", b"\x02" * 32)
    ring = KeyRing.of([old.public_key])
    overlap = ring.with_new_current(new.public_key)
    assert overlap.current() == [old.public_key, new.public_key]
    retired_at = datetime(2025, 6, 30, tzinfo=UTC)
    after = overlap.retire(old.public_key, retired_at)
    assert after.current() == [new.public_key]
    assert after.public_keys() == [old.public_key, new.public_key]
    entry = after.entry_for(old.public_key)
    assert entry is not None and entry.status == "retired"
    assert entry.trusted_at(datetime(2025, 6, 1, tzinfo=UTC))
    assert not entry.trusted_at(datetime(2025, 7, 1, tzinfo=UTC))
    (tmp_path / "keys.json").write_text(after.dumps())
    assert load_keyring(tmp_path / "keys.json") == after
    with pytest.raises(KeyFormatError, match="without a current key"):
        after.retire(new.public_key, retired_at)


def test_key_ring_json_is_strict() -> None:
    old = Signer.from_seed("log-2024", b"\x01" * 32).public_key.to_vkey()
    with pytest.raises(KeyFormatError, match="retired_at is required"):
        KeyRing.from_json({"keys": [{"vkey": old, "status": "retired", "retired_at": None}]})
    with pytest.raises(KeyFormatError, match="twice"):
        KeyRing.from_json({"keys": [{"vkey": old, "status": "current"}, {"vkey": old, "status": "current"}]})
    with pytest.raises(KeyFormatError, match="status"):
        KeyRing.from_json({"keys": [{"vkey": old, "status": "revoked", "retired_at": None}]})
    with pytest.raises(KeyFormatError):
        KeyRing.from_json(b"not json")
