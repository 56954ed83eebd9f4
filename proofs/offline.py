"""Offline verifier for erasure certificates: no Django, no database, no network.

    erasure-verify certificate.pdf --keyring keys.json --pdf-cert pdf-signing.pem
    python -m proofs certificate.json --key 'org.example/audit+1a2b3c4d+AR...'
    erasure-verify certificate.json --keyring keys.json --shards shards/ --model-dir models/m/v7/

Trust model. The *pinned* keys (`--key` vkeys or a `--keyring` JSON file obtained from the issuer
through a channel the auditor trusts) are the only trust anchor. The certificate carries the log's
published key list, but a certificate cannot vouch for itself: a published key is used only if the
pinned ring holds the same name and key bytes. Concretely:

1. the envelope must carry a valid signature by a pinned key;
2. the payload must be canonical JSON of a known schema: erasure-certificate/v5 (issued now: v4 plus
   how much text the relearning attacker fine-tuned on, in all and from the training corpus),
   erasure-certificate/v4 (v3 plus
   the retention statement: when the service destroys its copy of the person's data, and from which
   day no copy can be decrypted anywhere), erasure-certificate/v3 (v2
   plus the proof of an exact erasure, when there was one), erasure-certificate/v2 (with the threat
   model the verification was measured against) or erasure-certificate/v1 (issued before it was
   recorded); older certificates stay verifiable;
3. a pinned key that is retired signs only certificates issued no later than its `retired_at`;
4. at least one key of the certificate's published list must be pinned;
5. the checkpoint must be signed by such a key (published in the certificate *and* pinned), for the
   log origin the certificate names;
6. every leaf's inclusion proof must lead to the checkpoint root at the checkpoint size;
7. every leaf must be canonical audit JSON about this request (`request_id`, `subject_ref`);
8. every timeline entry must be backed by a leaf of the matching event type at the same instant;
9. where the certificate carries an exact-erasure proof (v3 `unlearning.exact`):
   - "exact recipe": the recipe hashes to `recipe_sha256`;
   - "exact shards": a reused shard (retrained_from_slice null) kept its records, data root and
     adapter; a retrained one restarted at a slice of the recipe; every shard has one checkpoint
     per slice and its adapter is the last one;
   - "exact slices": `retrained_slices` is the sum over retrained shards of (slices - restart
     slice) and `total_slices` is shards x slices;
   - "absence[i]": removed record i's commitment is proven absent from the after-tree (records,
     data_root) of every shard, i.e. from the data every adapter of the new version was trained on;
   - with `--shards DIR` (the content-addressed adapter store, `<DIR>/<sha[:2]>/<sha>.safetensors`),
     "adapter[k]": shard k's after-adapter file is there and its bytes hash to its name;
   - with `--model-dir DIR` (the new model version's directory), "model dir": its `sharding.json`
     names the proof's recipe and base and lists exactly the proof's after adapters and checkpoints.

Checks run in that order and stop at the first failure, because each later check relies on what the
earlier ones authenticated.

A certificate PDF is also checked as a document, since a person reads its printed text, not the JSON
it embeds. The PDF is trusted through its own pins: `--pdf-cert` files (PEM) with the issuer's
published PDF signing certificates. These checks run first and do not stop the statement's checks, so
that a rejected PDF still says whether the statement it carries verifies:

- "pdf signature": the PDF carries exactly one signature, PAdES (ETSI.CAdES.detached), whose digest
  and signature value are intact. A PDF issued before certificates were signed as PDFs fails here
  with "no PDF signature": its printed text is not protected, and only its certificate.json (checked
  below, or the JSON file issued with it) is evidence;
- "pdf coverage": the signature covers the whole file: no incremental update follows the signed
  revision (whatever one changes, text, pages or attachments, no signature covers);
- "pdf signer": the signer's certificate is one of the pinned PDF signing certificates, and the signing
  time it reports lies within that certificate's validity;
- "pdf text" (after every statement check passed): the printed text agrees with the signed statement:
  it shows the certificate id, request reference, subject reference, decision, dates, model and corpus
  versions and verdict the statement holds (`pdf.printed_facts`), and not the other verdict.

Exit status: 0 verified, 1 not verified (the reason is the last line),
2 usage error (bad arguments, unreadable file, malformed pinned key).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from proofs import merkle
from proofs.canonical import (
    parse_canonical,
    parse_canonical_document,
    parse_rfc3339_utc,
)
from proofs.checkpoint import CheckpointError, verify_checkpoint
from proofs.checks import CertificateFormatError, Check, StopChecks, VerificationResult
from proofs.cosignature import Cosigner, verify_cosignatures
from proofs.dsse import EnvelopeError, open_envelope
from proofs.envelope import (
    SCHEMA_VERSIONS,
    TIMELINE_EVENT_TYPES,
    CertificateError,
    validate_certificate_payload,
)
from proofs.exact_checks import exact_checks
from proofs.issuing import published_key_ring
from proofs.keys import KeyFormatError, KeyRing, KeyRingEntry, b64decode_strict, load_keyring
from proofs.pdf_checks import pdf_signature_checks, pdf_source, pdf_text_check
from proofs.pdfsign import (
    PdfKeyError,
    load_pdf_certificates,
)

ATTACHMENT_NAME = "certificate.json"


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


def verify_certificate(
    source: bytes | str | Mapping[str, Any],
    keyring: KeyRing,
    *,
    shards: Path | None = None,
    model_dir: Path | None = None,
    pdf_certificates: Sequence[x509.Certificate] = (),
    witnesses: Sequence[Cosigner] = (),
    witness_quorum: int | None = None,
) -> VerificationResult:
    """Run every check against the pinned `keyring`; never raises for a bad certificate.

    `shards` (the adapter store) and `model_dir` (the new model version's directory) add the checks
    of an exact erasure's files; a certificate without an exact proof then fails, since what was
    asked cannot be checked.

    A PDF `source` is checked as a document too, against the pinned `pdf_certificates` (module
    docstring: "pdf signature", "pdf coverage", "pdf signer", "pdf text").

    `witnesses` (their vkeys) and `witness_quorum` (default: all of them) add the check that the
    checkpoint carries that many valid cosignatures (C2SP tlog-cosignature): without it a log
    operator could show this certificate a fork of the log that nobody else sees.
    """
    result = VerificationResult()

    def passed(name: str, detail: str) -> None:
        result.checks.append(Check(name, True, detail))

    def failed(name: str, detail: str) -> StopChecks:
        result.checks.append(Check(name, False, detail))
        return StopChecks()

    pdf = pdf_source(source)
    pdf_signer = pdf_signature_checks(pdf, pdf_certificates, result) if pdf is not None else None
    try:
        _run_checks(source, keyring, result, passed, failed)
        _witness_checks(result, passed, failed, witnesses=witnesses, quorum=witness_quorum)
        exact_checks(result, passed, failed, shards=shards, model_dir=model_dir)
        if pdf is not None and result.payload is not None:
            text_check = pdf_text_check(pdf, result.payload)
            result.checks.append(text_check)
            if not text_check.ok:
                raise StopChecks()
    except StopChecks:
        result.ok = False
        result.summary = f"certificate NOT verified: {result.reason}"
        return result
    # The PDF checks do not stop the others: one of them may have failed before the statement's passed.
    result.ok = all(check.ok for check in result.checks)
    if not result.ok:
        result.summary = f"certificate NOT verified: {result.reason}"
    elif pdf_signer is not None:
        result.summary += f"; PDF signed by {pdf_signer}, whole file, printed text agrees"
    return result


def _witness_checks(
    result: VerificationResult, passed: Any, failed: Any, *,
    witnesses: Sequence[Cosigner], quorum: int | None,
) -> None:
    """Cosignatures on the certificate's checkpoint by the given witnesses (none given: not checked)."""
    needed = len(witnesses) if quorum is None else quorum
    if not witnesses or needed <= 0 or result.payload is None:
        return
    try:
        found = verify_cosignatures(result.payload["audit"]["checkpoint"], witnesses)
    except CheckpointError as exc:
        raise failed("witnesses", f"witness cosignature: {exc}") from None
    if len(found) < needed:
        raise failed(
            "witnesses",
            f"the checkpoint is cosigned by {len(found)} of the given witnesses, {needed} needed "
            f"({', '.join(c.cosigner.key_hint for c in found) or 'none'})",
        )
    passed("witnesses", "checkpoint cosigned by " + ", ".join(
        f"{c.cosigner.key_hint} at {c.timestamp}" for c in found) + f" ({len(found)} of {needed} needed)")


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


# --- exact erasure (schema v3) ---------------------------------------------------------------------


# --- the PDF as a document -------------------------------------------------------------------------


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


def _pinned_pdf_certificates(paths: Sequence[str]) -> list[x509.Certificate]:
    certificates: list[x509.Certificate] = []
    for path in paths:
        try:
            certificates.extend(load_pdf_certificates(Path(path).read_bytes()))
        except OSError as exc:
            raise _UsageError(f"cannot read PDF signing certificates: {exc.strerror}: {path}") from None
        except PdfKeyError as exc:
            raise _UsageError(f"--pdf-cert {path}: {exc}") from None
    return certificates


def _directory(value: str | None, what: str) -> Path | None:
    if value is None:
        return None
    if not Path(value).is_dir():
        raise _UsageError(f"{what} {value} is not a directory")
    return Path(value)


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
    parser.add_argument(
        "--shards",
        metavar="DIR",
        help="exact erasure: the content-addressed adapter store; check every after-adapter file's hash",
    )
    parser.add_argument(
        "--model-dir",
        metavar="DIR",
        help="exact erasure: the new model version's directory; check its sharding.json lists the proof's adapters",
    )
    parser.add_argument(
        "--witness", action="append", default=[], metavar="VKEY",
        help="a witness you trust (its cosignature/v1 vkey); the checkpoint must carry their cosignatures",
    )
    parser.add_argument(
        "--witness-quorum", type=int, metavar="N", help="how many of the --witness keys must have cosigned (default: all)"
    )
    parser.add_argument(
        "--pdf-cert",
        action="append",
        default=[],
        metavar="FILE",
        help="pinned PDF signing certificates (PEM, as the issuer publishes them); needed to verify a PDF",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the last line")
    args = parser.parse_args(argv)
    try:
        if not args.key and not args.keyring:
            raise _UsageError("pin at least one public key with --key or --keyring")
        keyring = _pinned_keyring(args.key, args.keyring)
        pdf_certificates = _pinned_pdf_certificates(args.pdf_cert)
        try:
            witnesses = [Cosigner.from_vkey(v) for v in args.witness]
        except KeyFormatError as exc:
            raise _UsageError(f"--witness: {exc}") from None
        if args.witness_quorum is not None and not 0 < args.witness_quorum <= len(witnesses):
            raise _UsageError("--witness-quorum must be between 1 and the number of --witness keys")
        shards, model_dir = (
            _directory(args.shards, "adapter store"),
            _directory(args.model_dir, "model directory"),
        )
        try:
            data = Path(args.certificate).read_bytes()
        except OSError as exc:
            raise _UsageError(f"cannot read certificate: {exc.strerror}: {args.certificate}") from None
    except _UsageError as exc:
        print(f"erasure-verify: error: {exc}", file=sys.stderr)
        return 2
    result = verify_certificate(data, keyring, shards=shards, model_dir=model_dir, witnesses=witnesses,
                                witness_quorum=args.witness_quorum, pdf_certificates=pdf_certificates)
    if not args.quiet:
        for check in result.checks:
            print(check.line)
    print(result.summary)
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
