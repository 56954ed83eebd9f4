"""The facts a certificate states, read from the request, its jobs, their verification reports and
the registry: which models and corpora changed (before/after versions), the method and its proof for
an exact erasure, the verdict and the threat model it was measured against. Values are squeezed to
what the certificate schema (proofs.envelope) accepts; a fact that cannot be stated raises
CertificateBuildError, a request without passing evidence CertificateNotReady."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from compliance.erasure.models import ErasureRequest
from compliance.erasure.services import ErasureError
from compliance.jobs.models import UnlearningJob, VerificationReport
from compliance.registry.models import CorpusVersion, ForgetItem, ModelVersion
from proofs.canonical import canonical_json_document
from proofs.envelope import (
    COMPARISON_FIGURES,
    CONTROL_SOURCES,
    EXACT_METHOD,
    CertificateError,
    validate_exact_proof,
)
from proofs.issuing import (
    decimal_text,
    exact_proof_text,
)
from proofs.pdf import threat_model_facts

HEX64 = re.compile(r"^[0-9a-f]{64}$")


MAX_TEXT = 500  # below envelope.MAX_TEXT; free text from other tables is squeezed to fit


class CertificateNotReady(ErasureError):
    """The request cannot be certified yet (wrong status, no passing verification)."""

    code = "not_ready"


class CertificateBuildError(ErasureError):
    """The stored facts do not make a valid certificate (e.g. a model version without its sha256)."""

    code = "certificate_invalid"


@dataclass(frozen=True)
class Evidence:
    job: UnlearningJob
    report: VerificationReport


def one_line(value: Any, fallback: str) -> str:
    # Control characters are dropped (the schema refuses them), runs of white space become one.
    printable = "".join(ch for ch in str(value or "") if ch.isprintable() or ch.isspace())
    text = " ".join(printable.split())[:MAX_TEXT]
    return text or fallback


def passing_evidence(request: ErasureRequest) -> Evidence:
    """The request's latest job and that job's latest report, which must have passed."""
    job = request.jobs.order_by("-created_at").first()
    if job is None:
        raise CertificateNotReady("No unlearning job has run for this request yet.")
    report = job.reports.order_by("-created_at", "-pk").first()
    if report is None:
        raise CertificateNotReady("The latest unlearning job has no verification report yet.")
    if report.verdict != "pass":
        raise CertificateNotReady(
            f"The latest verification verdict is {report.verdict!r}; a certificate needs a passing verdict."
        )
    return Evidence(job=job, report=report)


def _version(version: ModelVersion | CorpusVersion, what: str) -> dict[str, str]:
    if not HEX64.match(version.sha256 or ""):
        raise CertificateBuildError(f"{what} {version} has no SHA-256 recorded; it cannot be certified.")
    return {"version": f"v{version.number}", "sha256": version.sha256}


def models_part(evidence: Evidence) -> list[dict[str, Any]]:
    job, report = evidence.job, evidence.report
    before = report.base_version or job.base_version
    after = report.model_version
    return [
        {
            "model": job.model.name,
            "before": _version(before, "model version"),
            "after": _version(after, "model version"),
        }
    ]


def corpora_part(request: ErasureRequest) -> list[dict[str, Any]]:
    """Corpus versions written for this request (after) with their parents (before).

    Any of the request's jobs may have written them: when a job fails verification after erasing the
    corpora, its retry finds the records already gone and writes nothing, so looking only at the job
    that passed listed no corpus at all. A corpus counts when the request had records located in it.
    """
    corpus_ids = ForgetItem.objects.filter(request=request).values("corpus_version__corpus_id")
    written = (
        CorpusVersion.objects.filter(created_by_job__requests=request, corpus_id__in=corpus_ids)
        .select_related("corpus", "parent")
        .distinct()
        .order_by("corpus__name", "number")
    )
    rows = []
    for after in written:
        if after.parent is None:
            raise CertificateBuildError(f"corpus version {after} has no parent version to compare with.")
        rows.append(
            {
                "corpus": after.corpus.name,
                "before": _version(after.parent, "corpus version"),
                "after": _version(after, "corpus version"),
                "records_removed": ForgetItem.objects.filter(request=request, corpus_version__corpus=after.corpus).count(),
            }
        )
    return rows


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return decimal_text(value)
    except ValueError:
        return None


def _mapping(value: Any) -> dict[str, Any]:
    """The stored report is JSON written by another process: read it without trusting its shape."""
    return value if isinstance(value, dict) else {}


def _count_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _texts(value: Any) -> list[str]:
    """The non-empty strings of a stored list, each squeezed to one line; anything else is dropped."""
    items = value if isinstance(value, list) else []
    return [text for text in (one_line(item, "") for item in items if isinstance(item, str)) if text]


def _threat_model(document: dict[str, Any]) -> dict[str, Any]:
    """The report's `threat_model` in the certificate's v2 shape (envelope.THREAT_MODEL_KEYS).

    Reports stored before the worker recorded it, or with a damaged one, give what is known and
    nothing more: no families, null budgets, no control ("none"), no comparison. Never raises.
    """
    stored = _mapping(document.get("threat_model"))
    control = _mapping(stored.get("control"))
    source = control.get("source")
    comparison = []
    seen: set[str] = set()
    for name, figures in _mapping(stored.get("never_seen_comparison")).items():
        attack = one_line(name, "")
        if not attack or attack in seen or not isinstance(figures, dict):
            continue
        seen.add(attack)
        comparison.append({"attack": attack, **{key: _number(figures.get(key)) for key in COMPARISON_FIGURES}})
    return {
        "families": sorted(set(_texts(stored.get("families")))),
        "retries": _count_or_none(stored.get("retries")) or 0,
        "sampling_budget": _count_or_none(stored.get("sampling_budget")),
        "rank_candidates": _count_or_none(stored.get("rank_candidates")),
        "relearning_settings": _texts(stored.get("relearning_settings")),
        "quantization_levels": _texts(stored.get("quantization_levels")),
        # v5: what the relearning attacker held (reports stored before it was recorded: null)
        "relearning_data": {"texts": _count_or_none(stored.get("relearning_texts")),
                            "corpus_texts": _count_or_none(stored.get("relearning_corpus_texts"))},
        "control": {
            "people": _count_or_none(control.get("people")) or 0,
            "source": source if source in CONTROL_SOURCES else "none",
        },
        "never_seen_comparison": sorted(comparison, key=lambda row: row["attack"]),
    }


def threat_model_lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    """What the certificate says the verdict was measured against, as (label, text) lines for the job
    page, and how often a person the model never saw would fail the verdict where the policy bounds it
    (reports stored before that was recorded have no such line). None recorded: no lines. Never raises."""
    if not _mapping(document.get("threat_model")):
        return []
    lines = threat_model_facts(_threat_model(document))
    level = false_failure_text(document)
    if level:
        lines.append(("False failure", level))
    return lines


def false_failure_text(document: dict[str, Any]) -> str:
    """The verdict's false-failure level in words ("" where the report records none)."""
    level = _mapping(_mapping(document.get("threat_model")).get("false_failure_level")).get("verdict")
    if not isinstance(level, int | float) or isinstance(level, bool) or not 0 < level < 1:
        return ""
    return (f"a person the model never saw fails this verdict at most {100 * level:g}% of the time by design "
            "(the level split over the attacks, their rules, settings and retries)")


def verification_part(report: VerificationReport) -> dict[str, Any]:
    """Verdict, per-check rows and threat model from the stored report (unlearning_worker.verify.report).

    A row needs a measured value after and one bound. Its "before" is the base model's value of the
    same metric, or null (schema v2) for checks of attacks that never run on the base model
    (candidate_rank, relearning, quantization) and for relative metrics. Checks never evaluated are
    left out; the full report stays bound to the certificate through its SHA-256 in the completion
    leaf.
    """
    document = _mapping(report.report)
    verdict = _mapping(document.get("verdict"))
    attacks = _mapping(document.get("attacks"))
    rows = []
    left_out: list[str] = []
    checks = verdict.get("checks")
    for check in checks if isinstance(checks, list) else []:
        if not isinstance(check, dict):
            continue
        attack, metric = str(check.get("attack", "")), str(check.get("metric", ""))
        before_metrics = _mapping(_mapping(_mapping(attacks.get(attack)).get("before")).get("metrics"))
        bound = _mapping(check.get("bound"))
        after = _number(check.get("value"))
        before = _number(before_metrics.get(metric))
        threshold = _number(bound.get("max", bound.get("min")))
        if not attack or not metric or after is None or threshold is None:
            left_out.append(f"{attack or '?'}.{metric or '?'} ({check.get('status', 'not evaluated')})")
            continue
        rows.append(
            {
                "attack": one_line(f"{attack}.{metric} ({check.get('threshold', '')})", attack),
                "before": before,
                "after": after,
                "threshold": threshold,
                "passed": check.get("status") == "pass",
            }
        )
    policy = _mapping(report.policy)
    # The sentence counts what the certificate lists: the report's own summary counted every check,
    # including those without a measured value, and so said "12 checks" above a table of 9.
    listed = f"{len(rows)} check{'s' if len(rows) != 1 else ''} listed"
    if left_out:
        listed += f"; {len(left_out)} not listed, without a measured value or bound: {', '.join(left_out)}"
    decided_by = one_line(
        report.decided_by or f"policy {policy.get('name', 'unnamed')}: every listed check within its threshold ({listed})",
        f"policy {policy.get('name', 'unnamed')}: every check within its threshold",
    )
    return {
        "verdict": report.verdict,
        "decided_by": decided_by,
        "summary": rows,
        "threat_model": _threat_model(document),
    }


def exact_part(job: UnlearningJob) -> dict[str, Any] | None:
    """The job's exact-erasure proof in the certificate's shape, or None for an approximate job.

    A job whose method is exact erasure must carry a valid proof: a certificate that names the exact
    method without one would claim more than it can show.
    """
    proof = job.exact_proof or None
    names_exact = job.method == EXACT_METHOD or job.method.startswith(f"{EXACT_METHOD}+")
    if proof is None:
        if names_exact:
            raise CertificateBuildError(
                f"The unlearning job's method is {job.method} but it recorded no exact-erasure proof; "
                "it cannot be certified."
            )
        return None
    if not isinstance(proof, dict):
        raise CertificateBuildError("The unlearning job's exact-erasure proof is not a JSON object.")
    try:
        exact = exact_proof_text(proof)
        validate_exact_proof(exact)
        canonical_json_document(exact)  # e.g. a float among the recipe's `extra` values
    except (CertificateError, ValueError) as exc:
        raise CertificateBuildError(f"The unlearning job's exact-erasure proof cannot be certified: {exc}") from None
    return exact


def content_sha256(parts: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json_document(parts)).hexdigest()


