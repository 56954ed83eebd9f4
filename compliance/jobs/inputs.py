"""A job's inputs, built from registry rows as plain data for the worker's torch side.

The located records are decrypted here, in the worker process that runs the job, and never leave
its memory: the engine gets ForgetItem/RetainItem values, the verifier SubjectFacts built from
SubjectData. Nothing here is stored, logged or sent.

    subjects_and_items(job)  -> the subjects (name, values, texts), engine forget items, registry rows
    eval_set(job, subjects)  -> retain people, holdout and general texts, never-seen controls
    corpus_samples(job, subjects, attackers=, retain=) -> two seeded samples of the training corpora, one read:
                                without the subjects; also without open requests
    corpus_texts(job, subjects, limit) -> one of them
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
from pii.records import split_record, split_spans


@dataclass
class SubjectData:
    subject_key: str
    name: str
    values: dict[str, str]
    texts: list[str]


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
    With `leave_out_open`, nobody's whose erasure request is still open either: what the engine's
    retain term may keep in place. One of corpus_samples' two samples, which says how they are drawn."""
    samples = corpus_samples(job, subjects, attackers=0 if leave_out_open else limit,
                             retain=limit if leave_out_open else 0)
    return samples.retain if leave_out_open else samples.attackers


@dataclass(frozen=True)
class CorpusSamples:
    """Two samples of a job's training corpora, drawn in one read (corpus_samples)."""

    attackers: list[str]  # without the job's subjects: what a relearning attacker fine-tunes on
    retain: list[str]  # also without anyone whose erasure request is open: what the retain term keeps in place


class _Exclusion:
    """What one sample leaves out: located records by (corpus id, record id), texts, and words (names and
    identifiers, case folded) that a text must not hold."""

    def __init__(self, located: dict[int, set[str]], texts: set[str], words: set[str]) -> None:
        self.located = located
        self.texts = texts
        self.forbidden = sorted({w.casefold() for w in words if w and len(w.strip()) >= 3})

    def joined(self, other: _Exclusion) -> _Exclusion:
        """What either leaves out."""
        located = {c: self.located.get(c, set()) | other.located.get(c, set()) for c in {*self.located, *other.located}}
        out = _Exclusion(located, self.texts | other.texts, set())
        out.forbidden = sorted({*self.forbidden, *other.forbidden})
        return out

    def keeps(self, corpus_id: int, record_id: str, text: str, folded: str) -> bool:
        return (record_id not in self.located.get(corpus_id, ()) and text not in self.texts
                and not any(f in folded for f in self.forbidden))


def _exclusion(subjects: list[SubjectData], requests: list[Any]) -> _Exclusion:
    located: dict[int, set[str]] = {}  # corpus id -> located record ids
    if requests:
        for row in registry_selectors.forget_items_for(request_ids=[r.id for r in requests], corpus_ids=None):
            located.setdefault(row.corpus_version.corpus_id, set()).add(row.record_id)
    words: set[str] = set()
    for s in subjects:
        words.add(s.name)
        words.update(v for v in s.values.values() if len(v) >= 5 and any(c.isdigit() or c == "@" for c in v))
    for request in requests:
        subject = request.subject()
        words.update([subject.full_name, *subject.emails, *subject.phones, *subject.other_identifiers])
    return _Exclusion(located, {t for s in subjects for t in s.texts}, words)


def corpus_samples(job: UnlearningJob, subjects: list[SubjectData], *, attackers: int, retain: int) -> CorpusSamples:
    """Up to `attackers` and up to `retain` record texts of the corpus versions the job's base model was
    trained on, in one read of the corpora (a corpus of many GB is hashed and read once for both).

    The attackers' sample holds no record of the job's subjects. A record is left out when it is one of
    their located records (by corpus and record id, as the scanner named it), when its text is one of
    theirs, or when it names a subject (full name) or holds one of their identifiers (the request's
    e-mails, phones and other identifiers, and the values located in their records that look like
    identifiers: at least 5 characters with a digit or an @), case folded. The retain sample also leaves
    out, the same way, everyone whose erasure request is still open (their identifiers are decrypted
    for it only where a retain sample is asked for). Each sample is the records with the smallest keyed
    hash of (job, version, file, line) that it keeps, decided before a line is parsed: the same job draws
    the same texts, a smaller cap gives a prefix of a larger one, and only lines that would enter a
    sample are parsed. The files, their decoding and the record ids are the scanner's
    (compliance.erasure.scan.corpus_spec, pii.decode_line, pii.json_record). Each version's files are
    checked against their registered hash first (a changed file raises, and nothing is sampled)."""
    from compliance.erasure.scan import corpus_spec

    limits = (max(attackers, 0), max(retain, 0))
    if not any(limits):
        return CorpusSamples([], [])
    subject_refs = {s.subject_key for s in subjects}
    requests = [r for r in job.requests.select_related("data_key") if r.subject_ref in subject_refs] if subject_refs else []
    base = _exclusion(subjects, requests)
    exclusions = [base, base]
    if limits[1]:
        from compliance.erasure.models import OPEN_STATUSES, ErasureRequest

        mine = {r.id for r in requests}
        others = [r for r in ErasureRequest.objects.filter(status__in=OPEN_STATUSES).select_related("data_key")
                  if r.id not in mine]
        # the other open requests only: the job's own are in `base` already (read and decrypted once)
        exclusions[1] = base.joined(_exclusion([], others)) if others else base
    heaps: tuple[list[tuple[int, str]], list[tuple[int, str]]] = ([], [])  # (-rank, text): the smallest ranks kept

    def wanted(heap: list[tuple[int, str]], limit: int, rank: int) -> bool:
        return len(heap) < limit or (limit > 0 and rank < -heap[0][0])

    for version in job.base_version.trained_on.select_related("corpus").order_by("id"):
        source = artifacts.within_root(Path(version.path))
        artifacts.verify_tree(source, version.sha256)
        spec = corpus_spec(version)  # the scanner's files, format and fields
        for file in spec.paths:
            relative = file.relative_to(source).as_posix() if source.is_dir() else file.name
            with file.open("rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    key = f"{job.id}:{version.id}:{relative}:{number}".encode()
                    rank = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
                    offers = [i for i in (0, 1) if wanted(heaps[i], limits[i], rank)]
                    if not offers:
                        continue  # would enter neither sample: not parsed
                    record_id, text = _record(raw, f"{file.name}:{number}", spec)
                    if not text:
                        continue
                    folded = text.casefold()
                    for i in offers:
                        if not exclusions[i].keeps(version.corpus_id, record_id, text, folded):
                            continue
                        if len(heaps[i]) < limits[i]:
                            heapq.heappush(heaps[i], (-rank, text))
                        else:
                            heapq.heapreplace(heaps[i], (-rank, text))
    attacker_texts, retain_texts = ([text for _rank, text in sorted(h, reverse=True)] for h in heaps)
    return CorpusSamples(attacker_texts, retain_texts)


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
            found = [
                (text.find(value), text.find(value) + len(value), attribute)
                for attribute, value in person.values.items()
                if value and text.find(value) > 0  # a value at the text's start leaves no prompt
            ]
            if not found:
                continue
            prompt, completion, spans = split_spans(text, found)
            items.append(RetainItem(prompt=prompt, completion=completion, pii_spans=spans,
                                    subject_key=person.subject_key, subject_name=person.name))
    items.extend(text_retain_items(eval_set.general_texts))
    return items
