"""Getting our checkpoints cosigned by the configured witnesses (C2SP tlog-witness client).

    witnesses()                 the configured witnesses (settings.AUDIT_WITNESSES)
    witness_submit_pending()    send every committed checkpoint a witness has not cosigned, oldest
                                first, each with a consistency proof from the last one it cosigned
    cosigned_note(size)         the checkpoint's note with every stored cosignature appended
    quorum_met(size)            whether AUDIT_WITNESS_QUORUM witnesses cosigned that checkpoint

Only committed checkpoints are ever sent: a witness that cosigned a checkpoint which then rolled back
would rightly see the next one as a fork. A witness's refusal other than a stale old size (a fork, a
shrink, a proof that does not verify, our signature not accepted) is an alert for officers
(AuditWitnessAlert, the `audit.witness_refused` event and an error in the log): it means the
database no longer holds what the witness saw.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.audit.models import AuditCheckpoint, AuditCosignature, AuditWitnessAlert
from proofs import cosignature
from proofs.checkpoint import CheckpointError
from proofs.witness import SIZE_CONTENT_TYPE, format_request

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Witness:
    url: str  # submission prefix
    cosigner: cosignature.Cosigner

    @property
    def hint(self) -> str:
        return self.cosigner.key_hint


def witnesses() -> list[Witness]:
    return [Witness(url, cosignature.Cosigner.from_vkey(vkey)) for url, vkey in settings.AUDIT_WITNESSES]


def witness_cosigners() -> list[cosignature.Cosigner]:
    return [w.cosigner for w in witnesses()]


class WitnessUnavailable(RuntimeError):
    """A witness could not be reached or answered something the protocol does not allow."""


def _post(witness: Witness, body: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(  # noqa: S310 (the URL is the operator's configured witness)
        f"{witness.url}/add-checkpoint", data=body, method="POST",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.AUDIT_WITNESS_TIMEOUT_S) as response:  # noqa: S310
            return response.status, response.headers.get("Content-Type", ""), response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read(64 * 1024)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WitnessUnavailable(f"witness {witness.hint} unreachable ({type(exc).__name__})") from None


def _alert(witness: Witness, size: int, status: int, reason: str) -> None:
    """One open alert (and one `audit.witness_refused` leaf) per witness, size and status: the beat
    retries every interval and must not fill the log with the same refusal."""
    from compliance.audit.services import audit_append

    logger.error("witness %s refused checkpoint %d (%d): %s", witness.hint, size, status, reason)
    open_alert = AuditWitnessAlert.objects.filter(witness=witness.hint[:300], checkpoint_size=size, status=status,
                                                  resolved_at__isnull=True)
    if open_alert.exists():
        return
    with transaction.atomic():
        AuditWitnessAlert.objects.create(witness=witness.hint[:300], checkpoint_size=size, status=status,
                                         reason=reason[:500], created_at=timezone.now())
        audit_append(event_type="audit.witness_refused", actor="system", outcome="refused",
                     details={"size": size, "status": status,
                              "witness_key_id": int.from_bytes(witness.cosigner.key_id, "big")})


def _last_cosigned(witness: Witness) -> int:
    row = AuditCosignature.objects.filter(witness=witness.hint).order_by("-checkpoint_size").first()
    return row.checkpoint_size if row else 0


def _submit(witness: Witness, checkpoint: AuditCheckpoint, old: int) -> tuple[int, str, bytes]:
    from compliance.audit.services import consistency_proof

    proof = consistency_proof(old, checkpoint.size) if 0 < old < checkpoint.size else []
    return _post(witness, format_request(old, proof, checkpoint.note))


def _store(witness: Witness, checkpoint: AuditCheckpoint, answer: bytes) -> bool:
    """Keep the witness's cosignature on `checkpoint` if it verifies; False otherwise."""
    try:
        text = answer.decode("utf-8")
        found = cosignature.verify_cosignatures(cosignature.add_cosignatures(checkpoint.note, text.splitlines()),
                                                [witness.cosigner])
    except (UnicodeDecodeError, CheckpointError, ValueError):
        found = []
    if not found:
        return False
    with contextlib.suppress(IntegrityError), transaction.atomic():  # another process may have stored it first
        AuditCosignature.objects.create(checkpoint_size=checkpoint.size, witness=witness.hint[:300],
                                        timestamp=found[0].timestamp, line=found[0].line, created_at=timezone.now())
    return True


def submit_to(witness: Witness) -> int:
    """Send `witness` every checkpoint newer than the last it cosigned; returns how many it cosigned.
    Raises WitnessUnavailable when it cannot be reached (try again at the next beat)."""
    done = 0
    last = _last_cosigned(witness)
    for checkpoint in AuditCheckpoint.objects.filter(size__gt=last).order_by("size"):
        status, content_type, body = _submit(witness, checkpoint, last)
        if status == 409 and content_type.split(";")[0].strip() == SIZE_CONTENT_TYPE:
            # Our record of what it holds is stale (a lost row, a witness shared with a restore).
            # Resend from its size when that is one of our checkpoints and not beyond this one.
            try:
                held = int(body.decode("ascii").strip())
            except ValueError:
                raise WitnessUnavailable(f"witness {witness.hint} sent a malformed size") from None
            if held <= checkpoint.size and (held == 0 or AuditCheckpoint.objects.filter(size=held).exists()):
                status, content_type, body = _submit(witness, checkpoint, held)
            else:
                _alert(witness, checkpoint.size, status,
                       f"the witness holds size {held}, which this log never checkpointed or has since lost: "
                       "the database was rolled back or the log forked")
                return done
        if status == 200:
            if not _store(witness, checkpoint, body):
                raise WitnessUnavailable(f"witness {witness.hint} answered with no valid cosignature")
            done += 1
            last = checkpoint.size
            continue
        if status in (403, 404, 409, 422, 400):
            reason = body.decode("utf-8", "replace").strip()[:300]
            _alert(witness, checkpoint.size, status, reason or "refused")
            return done
        raise WitnessUnavailable(f"witness {witness.hint} answered HTTP {status}")
    return done


def witness_submit_pending() -> dict[str, int | str]:
    """Every witness, every checkpoint it has not cosigned. Returns per witness the count cosigned
    now, or the reason it could not be reached. Safe to run concurrently and to repeat."""
    results: dict[str, int | str] = {}
    for witness in witnesses():
        try:
            results[witness.hint] = submit_to(witness)
        except WitnessUnavailable as exc:
            logger.warning("%s", exc)
            results[witness.hint] = str(exc)
    return results


def cosignature_lines(size: int) -> list[str]:
    configured = {w.hint for w in witnesses()}
    return [row.line for row in AuditCosignature.objects.filter(checkpoint_size=size) if row.witness in configured]


def cosigned_note(checkpoint: AuditCheckpoint) -> str:
    return cosignature.add_cosignatures(checkpoint.note, cosignature_lines(checkpoint.size))


def quorum_met(checkpoint: AuditCheckpoint) -> bool:
    """Whether the checkpoint carries valid cosignatures of AUDIT_WITNESS_QUORUM configured witnesses."""
    if settings.AUDIT_WITNESS_QUORUM <= 0:
        return True
    try:
        found = cosignature.verify_cosignatures(cosigned_note(checkpoint), witness_cosigners())
    except CheckpointError:
        return False
    return len(found) >= settings.AUDIT_WITNESS_QUORUM


def open_alerts() -> list[AuditWitnessAlert]:
    return list(AuditWitnessAlert.objects.filter(resolved_at__isnull=True)[:20])


@dataclass(frozen=True)
class WitnessStatus:
    hint: str
    url: str
    last_cosigned_size: int
    last_cosigned_at: int | None  # the witness's timestamp (POSIX seconds)


def witness_status() -> list[WitnessStatus]:
    """Per configured witness: the newest checkpoint it cosigned (for the portal's audit page)."""
    out = []
    for witness in witnesses():
        row = AuditCosignature.objects.filter(witness=witness.hint).order_by("-checkpoint_size").first()
        out.append(WitnessStatus(witness.hint, witness.url, row.checkpoint_size if row else 0, row.timestamp if row else None))
    return out

