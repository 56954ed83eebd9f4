"""Offline verifier for erasure certificates: no Django, no database, no network.

    erasure-verify certificate.pdf --keyring keys.json
    python -m compliance.certificates certificate.json --key 'org.example/audit+1a2b3c4d+AR...'

Trust model. The *pinned* keys (`--key` vkeys or a `--keyring` JSON file obtained from the issuer
through a channel the auditor trusts) are the only trust anchor. The certificate carries the log's
published key list, but a certificate cannot vouch for itself: a published key is used only if the
pinned ring holds the same name and key bytes. Concretely:

1. the envelope must carry a valid signature by a pinned key;
2. the payload must be canonical JSON of a known schema: erasure-certificate/v2 (issued now, with
   the threat model the verification was measured against) or erasure-certificate/v1 (issued
   before it was recorded; such certificates stay verifiable);
3. a pinned key that is retired signs only certificates issued no later than its `retired_at`;
4. at least one key of the certificate's published list must be pinned;
5. the checkpoint must be signed by such a key (published in the certificate *and* pinned), for the
   log origin the certificate names;
6. every leaf's inclusion proof must lead to the checkpoint root at the checkpoint size;
7. every leaf must be canonical audit JSON about this request (`request_id`, `subject_ref`);
8. every timeline entry must be backed by a leaf of the matching event type at the same instant.

Checks run in that order and stop at the first failure, because each later check relies on what the
earlier ones authenticated. Exit status: 0 verified, 1 not verified (the reason is the last line),
2 usage error (bad arguments, unreadable file, malformed pinned key).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compliance.audit import merkle
from compliance.audit.canonical import parse_canonical, parse_canonical_document, parse_rfc3339_utc
from compliance.audit.checkpoint import CheckpointError, verify_checkpoint
from compliance.audit.keys import KeyFormatError, KeyRing, KeyRingEntry, b64decode_strict, load_keyring
from compliance.certificates.envelope import (
    SCHEMA_VERSIONS,
    TIMELINE_EVENT_TYPES,
    CertificateError,
    EnvelopeError,
    open_envelope,
    published_key_ring,
    validate_certificate_payload,
)

ATTACHMENT_NAME = "certificate.json"


@dataclass(frozen=True)
class Check:
    name: str  # stable identifier, e.g. "envelope", "inclusion[12]"
    ok: bool
    detail: str  # one human sentence, printed after "ok  " or "FAIL "

    @property
    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL '}{self.detail}"


@dataclass
class VerificationResult:
    ok: bool = False
    checks: list[Check] = field(default_factory=list)
    payload: dict[str, Any] | None = None  # set once the envelope and schema checks passed
    summary: str = ""

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        return failed[0].detail if failed else ""


class _Stop(Exception):
    """Internal: a check failed; later checks would rely on unauthenticated data."""


class CertificateFormatError(ValueError):
    """The input is neither a certificate JSON envelope nor a PDF that embeds one."""


def extract_certificate_from_pdf(data: bytes) -> bytes:
    """The embedded `certificate.json` attachment of a certificate PDF."""
    # Imported here so that verifying a JSON certificate needs nothing but `cryptography`.
    from pypdf import PdfReader

    try:
        attachments = dict(PdfReader(io.BytesIO(data)).attachments)
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on hostile input; all mean "unreadable"
        raise CertificateFormatError(f"unreadable PDF ({type(exc).__name__})") from None
    found = attachments.get(ATTACHMENT_NAME)
    if not found:
        raise CertificateFormatError(f"the PDF embeds no {ATTACHMENT_NAME}")
    if len(found) != 1:
        raise CertificateFormatError(f"the PDF embeds {len(found)} files named {ATTACHMENT_NAME}")
    return bytes(found[0])


def _certificate_bytes(source: bytes | str | Mapping[str, Any]) -> bytes | Mapping[str, Any]:
    if isinstance(source, str):
        return source.encode("utf-8")
    if isinstance(source, bytes | bytearray) and bytes(source[:5]) == b"%PDF-":
        return extract_certificate_from_pdf(bytes(source))
    return source


def verify_certificate(source: bytes | str | Mapping[str, Any], keyring: KeyRing) -> VerificationResult:
    """Run every check against the pinned `keyring`; never raises for a bad certificate."""
    result = VerificationResult()

    def passed(name: str, detail: str) -> None:
        result.checks.append(Check(name, True, detail))

    def failed(name: str, detail: str) -> _Stop:
        result.checks.append(Check(name, False, detail))
        return _Stop()

    try:
        _run_checks(source, keyring, result, passed, failed)
    except _Stop:
        result.ok = False
        result.summary = f"certificate NOT verified: {result.reason}"
        return result
    result.ok = True
    return result


def _run_checks(source: Any, keyring: KeyRing, result: VerificationResult, passed: Any, failed: Any) -> None:
    # 1. Envelope signature by a pinned key.
    try:
        envelope = open_envelope(_certificate_bytes(source), keyring)
    except (EnvelopeError, CertificateFormatError) as exc:
        raise failed("envelope", f"envelope signature: {exc}") from None
    signers = ", ".join(e.public_key.key_hint for e in envelope.signed_by)
    passed("envelope", f"envelope signature by {signers}")

    # 2. Canonical payload of a schema this verifier reads.
    try:
        payload = parse_canonical_document(envelope.payload)
    except ValueError as exc:
        raise failed("payload", f"payload is not canonical JSON: {exc}") from None
    schema = payload.get("schema")
    if schema not in SCHEMA_VERSIONS:
        raise failed(
            "payload",
            f"payload schema {schema!r} is not a known version; this verifier reads {', '.join(SCHEMA_VERSIONS)}",
        )
    try:
        validate_certificate_payload(payload)
    except CertificateError as exc:
        raise failed("payload", f"payload does not match {schema}: {exc}") from None
    result.payload = payload
    passed("payload", f"payload is canonical {schema} JSON (certificate {payload['certificate_id']})")

    # 3. A retired key may only have signed before its retirement.
    issued_at = parse_rfc3339_utc(payload["issued_at"])
    valid_signers = [e for e in envelope.signed_by if e.trusted_at(issued_at)]
    if not valid_signers:
        raise failed(
            "signing key",
            f"signing key {signers} was retired before the certificate's issue time {payload['issued_at']}",
        )
    passed("signing key", f"signing key was valid at issue time {payload['issued_at']}")

    # 4. The certificate's published keys, vouched for by the pinned ring.
    try:
        published = published_key_ring(payload)
    except KeyFormatError as exc:
        raise failed("published keys", f"published keys: {exc}") from None
    vouched = [e.public_key for e in published.entries if keyring.entry_for(e.public_key) is not None]
    if not vouched:
        raise failed("published keys", "none of the certificate's published log keys is pinned")
    passed("published keys", f"{len(vouched)} of {len(published.entries)} published log keys are pinned")

    # 5. Checkpoint signed by a published and pinned key, for the certificate's log.
    origin = payload["issuer"]["log_origin"]
    try:
        checkpoint = verify_checkpoint(payload["audit"]["checkpoint"], vouched, origin=origin)
    except CheckpointError as exc:
        raise failed("checkpoint", f"checkpoint signature: {exc}") from None
    by = ", ".join(k.key_hint for k in checkpoint.verified_by)
    passed("checkpoint", f"checkpoint signature by {by} (log {origin}, size {checkpoint.size})")

    # 6. Inclusion of every leaf under the signed root.
    documents: list[tuple[int, dict[str, Any]]] = []
    leaves: list[tuple[int, bytes]] = []
    for item in payload["audit"]["leaves"]:
        index = item["index"]
        leaf_bytes = b64decode_strict(item["leaf_b64"], "leaf")  # shape checked by the schema
        proof = [b64decode_strict(p, "proof") for p in item["proof"]]
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(leaf_bytes), index, checkpoint.size, proof, checkpoint.root
            )
        except merkle.ProofError as exc:
            raise failed(f"inclusion[{index}]", f"inclusion proof for leaf {index}: {exc}") from None
        passed(f"inclusion[{index}]", f"inclusion proof for leaf {index} ({len(proof)} hashes)")
        leaves.append((index, leaf_bytes))

    # 7. Every leaf is canonical audit JSON about this request.
    request = payload["request"]
    for index, leaf_bytes in leaves:
        try:
            document = parse_canonical(leaf_bytes)
        except ValueError as exc:
            raise failed(f"leaf[{index}]", f"leaf {index} is not canonical audit JSON: {exc}") from None
        for key in ("request_id", "subject_ref"):
            if document.get(key) != request[key]:
                raise failed(f"leaf[{index}]", f"leaf {index}: {key} differs from the certificate's request")
        documents.append((index, document))
        passed(
            f"leaf[{index}]",
            f"leaf {index} is a {document.get('type', '?')} event of request {request['reference']}",
        )

    # 8. The timeline is backed by the leaves.
    covered = []
    for key, event_type in TIMELINE_EVENT_TYPES.items():
        stated = payload["timeline"][key]
        if stated is None:
            continue
        moment = parse_rfc3339_utc(stated)
        backing = [
            index
            for index, document in documents
            if document.get("type") == event_type and _same_instant(document.get("time"), moment)
        ]
        if not backing:
            raise failed(
                "timeline",
                f"timeline {key} ({stated}) is not backed by a {event_type} leaf at that time",
            )
        covered.append(f"{key}=leaf {backing[0]}")
    passed("timeline", f"timeline backed by the log: {', '.join(covered)}")
    result.summary = (
        f"certificate {payload['certificate_id']} verified: {len(leaves)} audit leaves included in "
        f"{origin} at size {checkpoint.size}"
    )


def _same_instant(value: Any, moment: Any) -> bool:
    try:
        return isinstance(value, str) and parse_rfc3339_utc(value) == moment
    except ValueError:
        return False


# --- command line ---------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


def _pinned_keyring(keys: Sequence[str], keyring_paths: Sequence[str]) -> KeyRing:
    entries: list[KeyRingEntry] = []
    try:
        for path in keyring_paths:
            entries.extend(load_keyring(path).entries)
        entries.extend(KeyRing.of(keys).entries)
        return KeyRing(tuple(entries))
    except OSError as exc:
        raise _UsageError(f"cannot read key ring: {exc.strerror}: {exc.filename}") from None
    except KeyFormatError as exc:
        raise _UsageError(f"bad pinned key: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="erasure-verify",
        description="Verify an erasure certificate (JSON or PDF) offline against pinned public keys.",
    )
    parser.add_argument("certificate", help="certificate.json (DSSE envelope) or the certificate PDF")
    parser.add_argument(
        "--key", action="append", default=[], metavar="VKEY", help="pinned public key <name>+<id>+<base64>"
    )
    parser.add_argument(
        "--keyring", action="append", default=[], metavar="FILE", help="pinned key ring JSON file"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the last line")
    args = parser.parse_args(argv)
    try:
        if not args.key and not args.keyring:
            raise _UsageError("pin at least one public key with --key or --keyring")
        keyring = _pinned_keyring(args.key, args.keyring)
        try:
            data = Path(args.certificate).read_bytes()
        except OSError as exc:
            raise _UsageError(f"cannot read certificate: {exc.strerror}: {args.certificate}") from None
    except _UsageError as exc:
        print(f"erasure-verify: error: {exc}", file=sys.stderr)
        return 2
    result = verify_certificate(data, keyring)
    if not args.quiet:
        for check in result.checks:
            print(check.line)
    print(result.summary)
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
