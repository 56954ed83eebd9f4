"""C2SP signed-note checkpoints: exact format, Go reference vector, rotation, every tampering refused."""

from __future__ import annotations

import base64
import hashlib

import pytest

from proofs import merkle
from proofs.checkpoint import (
    CheckpointError,
    parse_checkpoint,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_note,
)
from proofs.keys import PublicKey, Signer, parse_signer_key

# golang.org/x/mod/sumdb/note note_test.go (BSD licence): the reference key pair and signed note.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

ORIGIN = "erasure.example.org/audit-log"
ROOT = merkle.root_of([merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b"), merkle.leaf_hash(b"c")])
OLD = Signer.from_seed("erasure.example.org/audit-2024", b"\x01" * 32)
NEW = Signer.from_seed("erasure.example.org/audit-2025", b"\x02" * 32)
STRANGER = Signer.from_seed("erasure.example.org/audit-2024", b"\x03" * 32)  # same name, other key


def test_go_reference_note_is_reproduced_byte_for_byte() -> None:
    signer = parse_signer_key(GO_SKEY)
    assert signer.public_key.to_vkey() == GO_VKEY
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE  # Ed25519 is deterministic (RFC 8032)
    body, verified = verify_note(GO_NOTE, [PublicKey.from_vkey(GO_VKEY)])
    assert body == GO_TEXT and verified[0].name == "PeterNeumann"


def test_key_id_is_sha256_of_name_newline_alg_key() -> None:
    key = PublicKey.from_vkey(GO_VKEY)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + key.key).digest()[:4]
    assert key.key_id == expected == bytes.fromhex("c74f20a3")


def test_checkpoint_text_format() -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, [NEW])
    body, _, signature_line = note.partition("\n\n")
    assert body + "\n" == f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\n"
    assert signature_line.startswith("\u2014 erasure.example.org/audit-2025 ") and signature_line.endswith(
        "\n"
    )
    blob = base64.b64decode(signature_line.split(" ")[2])
    assert blob[:4] == NEW.key_id and len(blob) == 68
    assert NEW.public_key.verify(blob[4:], (body + "\n").encode())


def test_round_trip_and_rotation_overlap() -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, [OLD, NEW])
    for keys in ([OLD.public_key], [NEW.public_key], [OLD.public_key, NEW.public_key]):
        checkpoint = verify_checkpoint(note, keys, origin=ORIGIN)
        assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 3, ROOT)
        assert set(checkpoint.verified_by) == set(keys)


def test_unknown_key_lines_are_ignored_but_one_known_key_is_required() -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, [STRANGER, NEW])
    assert verify_checkpoint(note, [NEW.public_key], origin=ORIGIN).verified_by == (NEW.public_key,)
    with pytest.raises(CheckpointError, match="no signature by a trusted key"):
        verify_checkpoint(sign_checkpoint(ORIGIN, 3, ROOT, [STRANGER]), [OLD.public_key], origin=ORIGIN)


def test_wrong_origin_is_refused() -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, [NEW])
    with pytest.raises(CheckpointError, match="is for log"):
        verify_checkpoint(note, [NEW.public_key], origin="other.example.org/log")


def test_every_single_byte_change_of_a_checkpoint_is_refused() -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, [NEW]).encode()
    reasons: set[str] = set()
    for position in range(len(note)):
        for replacement in {note[position] ^ 0x01, ord("x") if note[position] != ord("x") else ord("y")}:
            tampered = note[:position] + bytes([replacement]) + note[position + 1 :]
            with pytest.raises(CheckpointError) as info:
                verify_checkpoint(tampered, [NEW.public_key], origin=ORIGIN)
            reasons.add(str(info.value).split(":")[0])
    # Body edits surface as a failed signature, framing edits as format errors.
    assert any("does not verify" in r for r in reasons)
    assert len(reasons) > 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("origin\n3\n{root}\n", "no blank line"),
        ("origin\n3\n{root}\n\n", "no signature lines"),
        ("origin\n3\n{root}\n\n\u2014 {sig}", "end with a newline"),
        ("origin\n3\n{root}\n\n- {sig}\n", "em dash"),
        ("origin\n03\n{root}\n\n\u2014 {sig}\n", "leading zeros"),
        ("origin\n-3\n{root}\n\n\u2014 {sig}\n", "decimal"),
        ("origin\n3\n\n\u2014 {sig}\n", "origin, size and root"),
        ("origin\n3\nAAAA\n\n\u2014 {sig}\n", "32 bytes"),
        ("origin\r\n3\n{root}\n\n\u2014 {sig}\n", "control character"),
        ("origin\n3\n{root}\n\n\u2014 {name} AAAA\n", "4-byte key id"),
        ("origin\n3\n{root}\n\n\u2014 {name}  {blob}\n", "signature line must be"),
    ],
)
def test_malformed_notes_are_refused_with_a_reason(text: str, reason: str) -> None:
    good = sign_checkpoint("origin", 3, ROOT, [NEW])
    sig = good.split("\u2014 ")[1].rstrip("\n")
    name, blob = sig.split(" ")
    note = text.format(root=base64.b64encode(ROOT).decode(), sig=sig, name=name, blob=blob)
    with pytest.raises(CheckpointError, match=reason):
        verify_checkpoint(note, [NEW.public_key], origin="origin")


def test_parse_exposes_extension_lines_under_the_signature() -> None:
    note = sign_checkpoint(ORIGIN, 3, ROOT, [NEW], extensions=["timestamp 1700000000"])
    assert parse_checkpoint(note).extensions == ("timestamp 1700000000",)
    tampered = note.replace("1700000000", "1700000001")
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(tampered, [NEW.public_key], origin=ORIGIN)
