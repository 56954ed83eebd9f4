"""A job's inputs, built from registry rows as plain data for the worker's torch side.

The located records are decrypted here, in the worker process that runs the job, and never leave
its memory: the engine gets ForgetItem/RetainItem values, the verifier SubjectFacts built from
SubjectData. Nothing here is stored, logged or sent.

    subjects_and_items(job)  -> the subjects (name, values, texts), engine forget items, registry rows
    eval_set(job, subjects)  -> retain people, holdout and general texts, never-seen controls
    corpus_texts(job, subjects, limit) -> a seeded sample of the training corpora without the subjects
    retain_items(eval_set)   -> retain records for the engine
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance.jobs.models import UnlearningJob
from compliance.registry import artifacts
from compliance.registry import selectors as registry_selectors
from compliance.registry.models import ForgetItem

# Presidio entity types (and the scanner's subject kinds) -> the attribute names the engine and the
# verifier use for values ("phone", "ssn", ...). Unknown types keep their own lower-cased name.
ENTITY_ATTRIBUTE = {
    "PERSON": "name",
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "US_SSN": "ssn",
    "DATE_OF_BIRTH": "date_of_birth",
    "ZIP_CODE": "zip_code",
    "STREET_ADDRESS": "address",
    "PASSPORT": "passport",
    "US_PASSPORT": "passport",
    "DRIVER_LICENSE": "driver_licence",
    "US_DRIVER_LICENSE": "driver_licence",
    "MEDICAL_RECORD_NUMBER": "medical_record",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "bank_account",
    "US_BANK_NUMBER": "bank_account",
    "GENDER": "gender",
    "SUBJECT_IDENTIFIER": "identifier",
    "LOCATION": "region",
}


@dataclass
class SubjectData:
    subject_key: str
    name: str
    values: dict[str, str]
    texts: list[str]


def split_record(text: str, entities: list[dict[str, Any]]) -> tuple[str, str, list[tuple[int, int, str]]]:
    """(prompt, completion, spans in completion) for a located record: the prompt is the context up
    to the first PII value that is not a name (so "Jane Roe's phone is" -> " 555..."), the spans are
    the PII values after it."""
    spans = sorted(
        (int(e["start"]), int(e["end"]), ENTITY_ATTRIBUTE.get(str(e["type"]), str(e["type"]).lower()))
        for e in entities
        if 0 <= int(e["start"]) < int(e["end"]) <= len(text)
    )
    values = [s for s in spans if s[2] != "name"]
    if values:
        cut = values[0][0]
    elif spans:
        cut = spans[0][1]
    else:
        cut = 0
    if cut > 0 and text[cut - 1] == " ":
        cut -= 1  # the space belongs to the value's first token, as in training
    completion_spans = [(s - cut, e - cut, a) for s, e, a in spans if s >= cut]
    return text[:cut], text[cut:], completion_spans




def subjects_and_items(
    job: UnlearningJob, *, except_corpus: int | None = None
) -> tuple[list[SubjectData], list[Any], list[ForgetItem]]:
    """Decrypt the job's located records and the subjects' identifiers into engine ForgetItems
    (`except_corpus`: leave out the records of that corpus, which the exact path has handled)."""
    from unlearning_worker.data import ForgetItem as EngineForgetItem

    corpus_ids = registry_selectors.corpora_of(version=job.base_version) or None
    requests = list(job.requests.select_related("data_key").order_by("received_at"))
    rows = list(registry_selectors.forget_items_for(request_ids=[r.id for r in requests], corpus_ids=corpus_ids))
    if except_corpus is not None:
        rows = [row for row in rows if row.corpus_version.corpus_id != except_corpus]
    by_request: dict[Any, list[ForgetItem]] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append(row)
    subjects: list[SubjectData] = []
    forget: list[Any] = []
    for request in requests:
        subject = request.subject()
        values: dict[str, str] = {}
        texts: list[str] = []
        for row in by_request.get(request.id, []):
            text = row.text()
            if not text:
                continue
            texts.append(text)
            prompt, completion, spans = split_record(text, list(row.entities or []))
            for start, end, attribute in spans:
                if attribute != "name":
                    values.setdefault(attribute, completion[start:end])
            forget.append(
                EngineForgetItem(
                    subject_key=request.subject_ref,
                    prompt=prompt,
                    completion=completion,
                    pii_spans=[(s, e, a) for s, e, a in spans],
                    values={a: completion[s:e] for s, e, a in spans if a != "name"},
                    pri=min(1.0, max(0.0, float(row.pri_score or 0.0))),
                    subject_name=subject.full_name,
                )
            )
        for attribute, given in (("email", subject.emails), ("phone", subject.phones)):
            if given and attribute not in values:
                values[attribute] = given[0]
        subjects.append(SubjectData(request.subject_ref, subject.full_name, values, texts))
    return subjects, forget, rows



@dataclass
class EvalSet:
    retain: list[SubjectData]
    holdout_texts: list[str]
    general_texts: list[str]
    # people the model never saw (the never-seen control of the adaptive attacks); None: generated
    controls: list[SubjectData] | None = None


def eval_set(job: UnlearningJob, subjects: list[SubjectData]) -> EvalSet:
    model = job.model
    if not model.eval_set_path:
        return EvalSet([], [], [])
    path = artifacts.within_root(Path(model.eval_set_path))
    artifacts.verify_tree(path, model.eval_set_sha256)
    document = json.loads((path / "eval-set.json").read_text(encoding="utf-8"))
    forgotten = {s.name.casefold() for s in subjects}
    retain = [
        SubjectData(str(r["key"]), str(r["name"]), {k: str(v) for k, v in r["values"].items()}, list(r.get("texts", [])))
        for r in document.get("retain", [])
        if str(r["name"]).casefold() not in forgotten  # a subject is never part of the retain set
    ]
    controls = [
        SubjectData(str(c["key"]), str(c["name"]), {k: str(v) for k, v in c["values"].items()},
                    [str(t) for t in c.get("texts", [])])
        for c in document.get("controls", [])
        if str(c["name"]).casefold() not in forgotten
    ]
    return EvalSet(retain, list(document.get("holdout_texts", [])), list(document.get("general_texts", [])),
                   controls or None)



def corpus_texts(job: UnlearningJob, subjects: list[SubjectData], limit: int, *, leave_out_open: bool = False) -> list[str]:
    """Up to `limit` record texts of the corpus versions the job's base model was trained on, none of
    them a subject's: what an attacker who holds the rest of the training data fine-tunes on (the
    verifier's relearning attack and the engine's in-loop one; the copies they fine-tune are discarded).
    With `leave_out_open`, nobody's whose erasure request is still open either (their located records,
    names and identifiers, as a subject's): what the engine's retain term may keep in place
    (unlearning_worker.execution._retain_texts).

    A record is left out when it is one of the job's located records (by corpus and record id, as the
    scanner named it), when its text is one of theirs, or when it names a subject (full name) or holds
    one of their identifiers (the request's e-mails, phones and other identifiers, and the values
    located in their records that look like identifiers: at least 5 characters with a digit or an @),
    case folded. The files, their decoding and the record ids are the scanner's
    (compliance.erasure.scan.corpus_spec, pii.decode_line, pii.json_record). The sample is the `limit`
    records with the smallest keyed hash of (job, version, file, line), drawn before a line is parsed:
    the same job draws the same texts, and a corpus of any size is read once, parsing only the lines
    that would enter the sample. Each version's files
    are checked against their registered hash first (a changed file raises, and nothing is sampled)."""
    from compliance.erasure.scan import corpus_spec

    if limit <= 0:
        return []
    subject_refs = {s.subject_key for s in subjects}
    requests = [r for r in job.requests.select_related("data_key") if r.subject_ref in subject_refs] if subject_refs else []
    if leave_out_open:
        from compliance.erasure.models import OPEN_STATUSES, ErasureRequest

        mine = {r.id for r in requests}
        requests += [r for r in ErasureRequest.objects.filter(status__in=OPEN_STATUSES).select_related("data_key")
                     if r.id not in mine]
    located: dict[int, set[str]] = {}  # corpus id -> located record ids
    for row in registry_selectors.forget_items_for(request_ids=[r.id for r in requests], corpus_ids=None):
        located.setdefault(row.corpus_version.corpus_id, set()).add(row.record_id)
    texts = {t for s in subjects for t in s.texts}
    words: set[str] = set()
    for s in subjects:
        words.add(s.name)
        words.update(v for v in s.values.values() if len(v) >= 5 and any(c.isdigit() or c == "@" for c in v))
    for request in requests:
        subject = request.subject()
        words.update([subject.full_name, *subject.emails, *subject.phones, *subject.other_identifiers])
    forbidden = sorted({w.casefold() for w in words if w and len(w.strip()) >= 3})
    heap: list[tuple[int, str]] = []  # (-rank, text): the `limit` smallest ranks kept
    for version in job.base_version.trained_on.select_related("corpus").order_by("id"):
        source = artifacts.within_root(Path(version.path))
        artifacts.verify_tree(source, version.sha256)
        spec = corpus_spec(version)  # the scanner's files, format and fields
        skip = located.get(version.corpus_id, set())
        for file in spec.paths:
            relative = file.relative_to(source).as_posix() if source.is_dir() else file.name
            with file.open("rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    key = f"{job.id}:{version.id}:{relative}:{number}".encode()
                    rank = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
                    if len(heap) == limit and rank >= -heap[0][0]:
                        continue  # would not enter the sample: not parsed
                    record_id, text = _record(raw, f"{file.name}:{number}", spec)
                    if not text or record_id in skip or text in texts:
                        continue
                    folded = text.casefold()
                    if any(f in folded for f in forbidden):
                        continue
                    if len(heap) < limit:
                        heapq.heappush(heap, (-rank, text))
                    else:
                        heapq.heapreplace(heap, (-rank, text))
    return [text for _rank, text in sorted(heap, reverse=True)]


def _record(raw: bytes, default_id: str, spec: Any) -> tuple[str, str]:
    """(record id, text) of a corpus line as the scanner reads it (pii.decode_line, pii.json_record);
    text '' where there is none (a JSON line that does not parse is left out of the sample)."""
    from pii import decode_line, json_record

    line = decode_line(raw.rstrip(b"\r\n"))
    if spec.format != "jsonl":
        return default_id, line if line.strip() else ""
    try:
        record = json.loads(line)
    except ValueError:
        return default_id, ""
    if not isinstance(record, dict):
        return default_id, ""
    text, record_id = json_record(record, spec, default_id)
    return record_id, text if text is not None and text.strip() else ""


def retain_items(eval_set: EvalSet) -> list[Any]:
    """Retain records for the engine: each retain text split before its first known value, and the
    general texts split in half (data.text_retain_items)."""
    from unlearning_worker.data import RetainItem, text_retain_items

    items = []
    for person in eval_set.retain:
        for text in person.texts:
            found = sorted(
                (text.find(value), text.find(value) + len(value), attribute)
                for attribute, value in person.values.items()
                if value and text.find(value) > 0
            )
            if not found:
                continue
            cut = found[0][0]
            if text[cut - 1] == " ":
                cut -= 1
            spans = [(s - cut, e - cut, a) for s, e, a in found if s >= cut]
            items.append(RetainItem(prompt=text[:cut], completion=text[cut:], pii_spans=spans,
                                    subject_key=person.subject_key, subject_name=person.name))
    items.extend(text_retain_items(eval_set.general_texts))
    return items
