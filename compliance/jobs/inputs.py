"""A job's inputs, built from registry rows as plain data for the worker's torch side.

The located records are decrypted here, in the worker process that runs the job, and never leave
its memory: the engine gets ForgetItem/RetainItem values, the verifier SubjectFacts built from
SubjectData. Nothing here is stored, logged or sent.

    subjects_and_items(job)  -> the subjects (name, values, texts), engine forget items, registry rows
    eval_set(job, subjects)  -> retain people, holdout and general texts, never-seen controls
    retain_items(eval_set)   -> retain records for the engine
"""

from __future__ import annotations

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



def retain_items(eval_set: EvalSet) -> list[Any]:
    """Retain records for the engine: each retain text split before its first known value."""
    from unlearning_worker.data import RetainItem

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
    for text in eval_set.general_texts:
        words = text.split(" ")
        if len(words) >= 4:
            head = " ".join(words[: len(words) // 2])
            items.append(RetainItem(prompt=head, completion=text[len(head) :], pii_spans=[]))
    return items
