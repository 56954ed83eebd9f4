"""DSSE envelopes (in-toto's Dead Simple Signing Envelope) over a payload, signed with note keys.

    sign_envelope(payload, signer(s))    {"payloadType", "payload" (base64), "signatures": [{keyid, sig}]}
    open_envelope(data, keyring)         the payload and the trusted keys whose signature checks
    verify_envelope(data, keyring)       the payload, or EnvelopeError

Signatures are over PAE(payloadType, payload) (`pae`). The certificate's payload schema is in
proofs.envelope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proofs.canonical import (
    JSONLimitError,
    canonical_json_document,
    loads_limited,
)
from proofs.keys import (
    KeyFormatError,
    KeyRing,
    KeyRingEntry,
    Signer,
    b64decode_strict,
    b64encode,
)

PAYLOAD_TYPE = "application/vnd.erasure-certificate+json"


class EnvelopeError(ValueError):
    """The DSSE envelope is malformed or carries no valid signature by a trusted key."""


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


def sign_envelope(
    payload: bytes, signer: Signer | Sequence[Signer], payload_type: str = PAYLOAD_TYPE
) -> dict[str, Any]:
    """A DSSE envelope over `payload`, one signature per signer (several during a key rotation)."""
    signers = [signer] if isinstance(signer, Signer) else list(signer)
    if not signers:
        raise EnvelopeError("an envelope needs at least one signer")
    message = pae(payload_type, payload)
    return {
        "payloadType": payload_type,
        "payload": b64encode(payload),
        "signatures": [{"keyid": s.public_key.key_hint, "sig": b64encode(s.sign(message))} for s in signers],
    }


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The certificate file: the envelope as compact canonical JSON."""
    return canonical_json_document(dict(envelope))


def parse_envelope(data: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """Load and shape-check an envelope (no signature check)."""
    if isinstance(data, bytes | bytearray | str):
        try:
            envelope = loads_limited(data)
        except JSONLimitError as exc:
            raise EnvelopeError(f"envelope is beyond the verifier's limits: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"envelope is not JSON: {exc}") from None
    else:
        envelope = dict(data)
    if not isinstance(envelope, dict):
        raise EnvelopeError("envelope must be a JSON object")
    if set(envelope) != {"payloadType", "payload", "signatures"}:
        raise EnvelopeError("envelope must have exactly payloadType, payload and signatures")
    if not isinstance(envelope["payloadType"], str) or not isinstance(envelope["payload"], str):
        raise EnvelopeError("payloadType and payload must be strings")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("envelope has no signatures")
    for position, item in enumerate(signatures):
        if (
            not isinstance(item, dict)
            or not set(item) <= {"keyid", "sig"}
            or not isinstance(item.get("sig"), str)
            or not isinstance(item.get("keyid", ""), str)
        ):
            raise EnvelopeError(f"signatures[{position}] must be {{keyid: str, sig: str}}")
    return envelope


def ensure_envelope_payload(envelope: Mapping[str, Any], payload: bytes) -> None:
    """Refuse an envelope (signature not checked) whose type or payload bytes differ from `payload`."""
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise EnvelopeError(f"payloadType must be {PAYLOAD_TYPE!r}")
    try:
        carried = b64decode_strict(str(envelope.get("payload", "")), "payload")
    except KeyFormatError as exc:
        raise EnvelopeError(str(exc)) from None
    if carried != payload:
        raise EnvelopeError("the envelope carries a different payload")


@dataclass(frozen=True)
class VerifiedEnvelope:
    payload: bytes
    payload_type: str
    signed_by: tuple[KeyRingEntry, ...]  # every trusted key whose signature verified


def open_envelope(
    data: bytes | str | Mapping[str, Any], keyring: KeyRing, payload_type: str = PAYLOAD_TYPE
) -> VerifiedEnvelope:
    """Check the envelope and return its payload with the trusted keys that signed it.

    A signature whose keyid names no trusted key is skipped (keyids are hints); one that names a
    trusted key and fails is an error; at least one must verify. A missing keyid tries every key.
    """
    envelope = parse_envelope(data)
    if envelope["payloadType"] != payload_type:
        raise EnvelopeError(f"payloadType is {envelope['payloadType']!r}, expected {payload_type!r}")
    try:
        payload = b64decode_strict(envelope["payload"], "payload")
    except KeyFormatError as exc:
        raise EnvelopeError(str(exc)) from None
    message = pae(payload_type, payload)
    signed_by: list[KeyRingEntry] = []
    hints: list[str] = []
    for position, item in enumerate(envelope["signatures"]):
        try:
            signature = b64decode_strict(item["sig"], f"signatures[{position}].sig")
        except KeyFormatError as exc:
            raise EnvelopeError(str(exc)) from None
        hint = item.get("keyid", "")
        hints.append(hint or "(no keyid)")
        candidates = (
            [e for e in keyring.entries if e.public_key.key_hint == hint] if hint else list(keyring.entries)
        )
        verified = [e for e in candidates if e.public_key.verify(signature, message)]
        if hint and candidates and not verified:
            raise EnvelopeError(f"signature by {hint} does not verify: payload or signature altered")
        signed_by.extend(e for e in verified if e not in signed_by)
    if not signed_by:
        raise EnvelopeError(f"no valid signature by a pinned key (signatures name: {', '.join(hints)})")
    return VerifiedEnvelope(payload=payload, payload_type=payload_type, signed_by=tuple(signed_by))


def verify_envelope(data: bytes | str | Mapping[str, Any], keyring: KeyRing) -> bytes:
    """The payload bytes of an envelope signed by a key of `keyring`; raises EnvelopeError."""
    return open_envelope(data, keyring).payload


