"""Corpus erasure: a new CorpusVersion without the subjects' records, or with their PII anonymised.

settings.CORPUS_ERASURE_MODE: "remove" drops each located record; "anonymise" keeps the record and
replaces every PII entity span the scan found in it with a placeholder such as <PHONE_NUMBER>. The
new version is written atomically under ARTIFACT_ROOT (compliance.registry.artifacts); the old
version stays as it was (versions are immutable) and is referenced as the new one's parent, so that
a future retrain reads the new version and cannot relearn the subjects.

Records are matched by record id: the corpus's id field for JSONL, "<file name>:<line>" otherwise
(the scanner's convention). Line-based ids are only trusted on the version they were located in,
since removing lines renumbers the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from compliance.registry import artifacts
from compliance.registry import services as registry_services
from compliance.registry.models import Corpus, CorpusVersion, ForgetItem


class CorpusErasureError(Exception):
    pass


@dataclass(frozen=True)
class ErasurePlan:
    """What to do with each located record: record id -> entity spans (start, end, type) to mask, and
    the record's text as located (spans are only valid on that exact text)."""

    records: dict[str, list[tuple[int, int, str]]]
    located_texts: dict[str, str | None]


def plan_for(items: Iterable[ForgetItem], *, base: CorpusVersion) -> ErasurePlan:
    records: dict[str, list[tuple[int, int, str]]] = {}
    texts: dict[str, str | None] = {}
    for item in items:
        if not base.corpus.id_field or base.corpus.format != Corpus.Format.JSONL:
            if item.corpus_version_id != base.id:
                raise CorpusErasureError(
                    f"record {item.record_id} was located in {item.corpus_version}, but {base} is current and "
                    "this corpus has no id field to follow it across versions; rescan first"
                )
        texts[item.record_id] = item.text()
        spans = records.setdefault(item.record_id, [])
        for entity in item.entities or []:
            spans.append((int(entity["start"]), int(entity["end"]), str(entity["type"])))
    return ErasurePlan(records=records, located_texts=texts)


def _mask(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace spans right to left (offsets stay valid); overlapping spans merge into the earlier one."""
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if not 0 <= start < end <= len(text):
            continue
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2])
        else:
            merged.append((start, end, kind))
    for start, end, kind in reversed(merged):
        text = text[:start] + f"<{kind}>" + text[end:]
    return text


def rewrite_file(
    source: Path, target: Path, *, corpus: Corpus, plan: ErasurePlan, mode: str
) -> tuple[int, int]:
    """Stream `source` to `target`, dropping or masking planned records. Returns (removed, anonymised)."""
    removed = anonymised = 0
    with source.open("rb") as src, target.open("wb") as dst:
        for line_number, raw in enumerate(src, start=1):
            record_id, record = _identify(raw, source.name, line_number, corpus)
            spans = plan.records.get(record_id) if record_id is not None else None
            if record_id is None or spans is None:
                dst.write(raw)
                continue
            if mode == "remove":
                removed += 1
                continue
            newline = b"\n" if raw.endswith(b"\n") else b""
            text = str(record.get(corpus.text_field, "")) if record is not None else raw.decode("utf-8", "replace").rstrip("\n")
            if text != plan.located_texts.get(record_id):
                dst.write(raw)  # already anonymised (or changed): its spans no longer apply
                continue
            anonymised += 1
            if record is not None:
                record[corpus.text_field] = _mask(text, spans)
                dst.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + newline)
            else:
                dst.write(_mask(text, spans).encode("utf-8") + newline)
    return removed, anonymised


def _identify(raw: bytes, file_name: str, line_number: int, corpus: Corpus) -> tuple[str | None, dict[str, Any] | None]:
    default_id = f"{file_name}:{line_number}"
    if corpus.format != Corpus.Format.JSONL:
        return default_id, None
    if not raw.strip():
        return None, None
    try:
        record = json.loads(raw)
    except ValueError:
        return default_id, None  # malformed lines keep the scanner's positional id
    if not isinstance(record, dict):
        return default_id, None
    if corpus.id_field and corpus.id_field in record:
        return str(record[corpus.id_field]), record
    return default_id, record


def corpus_erase(
    *, corpus: Corpus, items: list[ForgetItem], created_by_job: object | None = None, mode: str | None = None,
    actor: str = "system",
) -> CorpusVersion | None:
    """Write and register the corpus's next version without (or with masked) `items`' records.
    Returns None when no current record matches (already erased by an earlier job)."""
    mode = mode or settings.CORPUS_ERASURE_MODE
    if mode not in {"remove", "anonymise"}:
        raise CorpusErasureError("CORPUS_ERASURE_MODE must be remove or anonymise")
    base = corpus.versions.order_by("-number").first()
    if base is None:
        raise CorpusErasureError(f"corpus {corpus.name} has no version")
    source = artifacts.within_root(Path(base.path))
    artifacts.verify_tree(source, base.sha256)
    plan = plan_for(items, base=base)
    final = artifacts.corpus_version_dir(corpus.name, base.number + 1)
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    removed = anonymised = 0
    try:
        with artifacts.atomic_directory(final) as tmp:
            for file in files:
                relative = file.relative_to(source) if source.is_dir() else Path(file.name)
                target = tmp / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                r, a = rewrite_file(file, target, corpus=corpus, plan=plan, mode=mode)
                removed += r
                anonymised += a
            if removed + anonymised == 0:
                raise _NothingToErase  # discards the temporary copy
    except _NothingToErase:
        return None
    return registry_services.corpus_version_record(
        parent=base, path=final, created_by_job=created_by_job, records_removed=removed,
        records_anonymised=anonymised, actor=actor,
    )


class _NothingToErase(Exception):
    pass
