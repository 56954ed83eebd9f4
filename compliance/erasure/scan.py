"""Glue between a verified request and the pure scanner in `pii/`: locate, score, store, triage.

Runs on the `default` queue (task `erasure.scan_request`). Idempotent: a rerun of a request that is
no longer `verified` does nothing, and located records are upserted by (corpus version, record id).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.db import transaction

from compliance.erasure.models import ErasureRequest, Status
from compliance.erasure.transitions import transition
from compliance.registry.models import Corpus, CorpusVersion, ForgetItem

logger = logging.getLogger(__name__)

# The scanner's name for each Corpus.Format (pii.CorpusSpec.format): the same words, as its Literal type.
_SCAN_FORMATS: dict[str, Literal["jsonl", "text"]] = {Corpus.Format.JSONL: "jsonl", Corpus.Format.TEXT: "text"}


def corpus_files(version: CorpusVersion) -> tuple[Path, ...]:
    """The files of a corpus version: the path itself, or every .jsonl/.txt file under it, sorted."""
    path = Path(version.path)
    if path.is_dir():
        return tuple(sorted(p for p in path.rglob("*") if p.suffix in {".jsonl", ".txt", ".json"} and p.is_file()))
    return (path,)


def corpus_spec(version: CorpusVersion) -> Any:
    from pii import CorpusSpec

    corpus = version.corpus
    scan_format = _SCAN_FORMATS.get(corpus.format)
    if scan_format is None:
        raise ValueError(f"corpus {corpus.name} has format {corpus.format!r}, which the scanner does not read")
    return CorpusSpec(
        paths=corpus_files(version),
        format=scan_format,
        text_field=corpus.text_field,
        id_field=corpus.id_field or None,
        name=corpus.name,
    )


def corpora_in_scope(request: ErasureRequest) -> list[CorpusVersion]:
    """The current version of every corpus the request concerns: all registered corpora unless the
    request names models, in which case the corpora those models' active versions were trained on."""
    if request.scope_all_models:
        versions = [c.current_version() for c in Corpus.objects.order_by("name")]
        return [v for v in versions if v is not None]
    seen: dict[int, CorpusVersion] = {}
    for model in request.scope_models.all():
        active = model.active_version()
        if active is not None:
            for version in active.trained_on.select_related("corpus"):
                current = version.corpus.current_version()
                if current is not None:
                    seen[current.pk] = current
    return list(seen.values())


def erasure_request_scan(*, request_id: str) -> dict[str, int]:
    """1. Scan every corpus in scope for the subject (pre-filter + Presidio confirmation).
    2. Score each located record and the request as a whole (PRI, with its explanation).
    3. Store the located records (text sealed under the request's data key) and move the request
       to triaged, with the scan summary, in one transaction."""
    from pii import (
        EngineConfig,
        PriPolicy,
        build_analyzer,
        read_record,
        scan_corpus,
        score_record,
        score_request,
    )

    request = ErasureRequest.objects.get(pk=request_id)
    if request.status != Status.VERIFIED:
        return {"skipped": 1}
    subject = request.subject()
    policy = PriPolicy.load(settings.PRI_POLICY_FILE)
    analyzer = build_analyzer(EngineConfig(spacy_model=settings.PII_SPACY_MODEL))
    located: list[tuple[CorpusVersion, Any, str, Any]] = []
    summary: dict[str, Any] = {"corpora": [], "records_read": 0, "records_located": 0, "anomalies": 0}
    for version in corpora_in_scope(request):
        spec = corpus_spec(version)
        result = scan_corpus(spec, subject, analyzer=analyzer)
        report = result.report
        summary["records_read"] += report.records_read
        summary["anomalies"] += report.malformed_json_lines + report.non_utf8_lines + report.oversize_lines
        summary["corpora"].append(
            {"corpus": version.corpus.name, "version": version.number, "located": len(result.for_subject(0)), **report.to_dict()}
        )
        for record in result.for_subject(0):
            located.append((version, record, read_record(record, spec), score_record(record.entity_types, policy)))
    overall = score_request([record for _, record, _, _ in located], policy)
    summary["records_located"] = len(located)
    with transaction.atomic():
        for version, record, text, score in located:
            item, _ = ForgetItem.objects.update_or_create(
                request=request,
                corpus_version=version,
                record_id=record.record_id,
                defaults={
                    "line_number": record.line_number,
                    "matched": list(record.matched_kinds),
                    "entities": [
                        {"type": e.entity_type, "start": e.start, "end": e.end, "score": round(e.score, 3)} for e in record.entities
                    ],
                    "pri_score": score.value,
                    "pri_explanation": score.explanation,
                },
            )
            item.seal_text(text)
            item.save(update_fields=["text_sealed"])
        transition(
            request,
            Status.TRIAGED,
            actor="system",
            fields={
                "pri_score": overall.value,
                "pri_tier": overall.tier,
                "pri_explanation": overall.explanation,
                "scan_summary": summary,
            },
            details={"records": len(located), "tier": overall.tier, "corpora": len(summary["corpora"])},
        )
    logger.info("scanned request %s: %d records located", request.reference, len(located))
    return {"records": len(located)}
