"""Witness cosignatures on checkpoints (C2SP tlog-cosignature, Ed25519 "cosignature/v1").

A cosignature is a note signature line on a checkpoint by a *witness*: someone outside the service
who checked that the checkpoint extends every earlier one it saw of this log. A verifier holding the
witness's public key and a quorum rule can then trust that the log did not show it a fork.

    — <witness name> base64(key id (4) || timestamp (8, big-endian) || Ed25519 signature (64))

key id = SHA-256(name || "\\n" || 0x04 || public key)[:4] (keys.key_id with alg 0x04); the signed message is
"cosignature/v1\\n" "time <timestamp>\\n" followed by the checkpoint's note text (signature lines
excluded). Witness keys use the signed-note key formats with algorithm byte 0x04:
vkey `<name>+<hex key id>+base64(0x04 || key)`, secret `PRIVATE+KEY+<name>+<hex key id>+base64(0x04 || seed)`.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proofs.checkpoint import SIGNATURE_PREFIX, CheckpointError, parse_note
from proofs.keys import (
    KeyFormatError,
    NamedKey,
    b64encode,
    check_key_name,
    join_key_text,
    split_key_text,
)

ALG_COSIGNATURE_V1 = 0x04
KEY_SIZE = 32
SIGNATURE_SIZE = 64
COSIGNATURE_SIZE = 4 + 8 + SIGNATURE_SIZE
PRIVATE_PREFIX = "PRIVATE+KEY+"
MAX_TIMESTAMP = 2**63 - 1


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a cosigner signs: the header line, the time line, the checkpoint's note text."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CheckpointError("cosignature timestamp must be a non-negative 63-bit integer")
    if not body.endswith("\n") or "\n\n" in body:
        raise CheckpointError("the cosigned text must be a note body: lines each ending in a newline")
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode("utf-8")


@dataclass(frozen=True)
class Cosigner(NamedKey):
    """A witness's public key, as a verifier configures it (key id and vkey with algorithm byte 0x04)."""

    ALG: ClassVar[int] = ALG_COSIGNATURE_V1
    WHAT: ClassVar[str] = "witness vkey"
    ALG_NAME: ClassVar[str] = "a cosignature/v1 Ed25519 key"

    def verify(self, body: str, timestamp: int, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(signature, cosigned_message(body, timestamp))
        except (InvalidSignature, CheckpointError):
            return False
        return True


class WitnessKey:
    """A witness's signing key. `repr` never shows the secret."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._private_key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.cosigner = Cosigner(name=name, key=raw)

    def __repr__(self) -> str:
        return f"WitnessKey({self.cosigner.key_hint!r})"

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        return cls(name, Ed25519PrivateKey.generate())

    def cosign(self, body: str, timestamp: int) -> str:
        """One cosignature line (ending in a newline) over a checkpoint's note text."""
        signature = self._private_key.sign(cosigned_message(body, timestamp))
        raw = self.cosigner.key_id + struct.pack(">Q", timestamp) + signature
        return f"{SIGNATURE_PREFIX}{self.name} {b64encode(raw)}\n"

    def to_secret(self) -> str:
        """The secret key text. Write it only to a 0600 file or a secret store."""
        seed = self._private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return PRIVATE_PREFIX + join_key_text(self.name, self.cosigner.key_id, ALG_COSIGNATURE_V1, seed)

    @classmethod
    def from_secret(cls, text: str) -> WitnessKey:
        text = text.strip()
        if not text.startswith(PRIVATE_PREFIX):
            raise KeyFormatError("witness key must look like PRIVATE+KEY+<name>+<hex id>+<base64 seed>")
        name, hex_id, seed = split_key_text(text[len(PRIVATE_PREFIX) :], what="witness key", alg=ALG_COSIGNATURE_V1,
                                            alg_name="a cosignature/v1 Ed25519 seed")
        key = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if key.cosigner.key_id.hex() != hex_id:
            raise KeyFormatError(f"witness key {name}: key id {hex_id} does not match the key")
        return key

    @classmethod
    def load(cls, path: str | Path) -> WitnessKey:
        try:
            return cls.from_secret(Path(path).read_text(encoding="ascii"))
        except UnicodeDecodeError:
            raise KeyFormatError(f"witness key file {path} is not ASCII text") from None


@dataclass(frozen=True)
class VerifiedCosignature:
    cosigner: Cosigner
    timestamp: int
    line: str  # the signature line as it appeared, with its newline


def cosignature_lines(note: str | bytes) -> list[str]:
    """The signature lines of a note, verbatim (with their newlines)."""
    text = note.decode("utf-8") if isinstance(note, bytes | bytearray) else note
    parse_note(text)
    return [f"{line}\n" for line in text[text.rfind("\n\n") + 2 :].split("\n") if line]


def verify_cosignatures(note: str | bytes, cosigners: Sequence[Cosigner]) -> list[VerifiedCosignature]:
    """The cosignatures on `note` by the given witnesses (one per witness, the newest). Lines by other
    keys are ignored, as the spec requires; a line that claims a given witness's key id but does not
    verify is an error (the note or the cosignature was altered)."""
    text = note.decode("utf-8") if isinstance(note, bytes | bytearray) else note
    body, signatures = parse_note(text)
    lines = cosignature_lines(text)
    found: dict[bytes, VerifiedCosignature] = {}
    for signature, line in zip(signatures, lines, strict=True):
        for cosigner in cosigners:
            if cosigner.name != signature.name or cosigner.key_id != signature.key_id:
                continue
            if len(signature.signature) != 8 + SIGNATURE_SIZE:
                raise CheckpointError(f"cosignature by {cosigner.key_hint} is not a timestamped Ed25519 signature")
            (timestamp,) = struct.unpack(">Q", signature.signature[:8])
            if timestamp > MAX_TIMESTAMP or not cosigner.verify(body, timestamp, signature.signature[8:]):
                raise CheckpointError(f"cosignature by {cosigner.key_hint} does not verify: the checkpoint was altered")
            previous = found.get(cosigner.key_id)
            if previous is None or timestamp > previous.timestamp:
                found[cosigner.key_id] = VerifiedCosignature(cosigner, timestamp, line)
    return list(found.values())


def add_cosignatures(note: str, lines: Sequence[str]) -> str:
    """The note with these signature lines added (each once)."""
    present = set(cosignature_lines(note))
    extra = [line if line.endswith("\n") else line + "\n" for line in lines]
    return note + "".join(line for line in dict.fromkeys(extra) if line not in present)
