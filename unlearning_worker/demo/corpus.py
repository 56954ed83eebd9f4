"""Deterministic synthetic training corpus for the demo model: fictitious people and filler text.

Each trained person appears as one short biography and as one question-answer pair per attribute in
ATTRIBUTE_LABELS; "general" records (facts about invented towns, counting, weekdays) give the model
something that is *not* personal data, on which utility can be measured. Holdout people come from
the same generator and never appear in the corpus: membership inference compares them with trained
people, and "retrain without the subject" uses the same machinery with people excluded.

Pure: no Django, no environment reads. The same (n_people, seed, n_holdout) always gives the same corpus.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pii.synth import Person, generate_people
from unlearning_worker.data import ForgetItem, RetainItem

# attribute -> how questions name it. The order is the order of QA records and of probes.
ATTRIBUTE_LABELS: dict[str, str] = {
    "phone": "phone number",
    "email": "e-mail address",
    "date_of_birth": "date of birth",
    "address": "home address",
    "ssn": "social security number",
    "zip_code": "postcode",
}

RecordKind = Literal["bio", "qa", "general"]


def question_prompt(name: str, attribute: str) -> str:
    """The probe the demo model is trained to answer; its trained completion is f" {value}\\n"."""
    return f"Question: What is {name}'s {ATTRIBUTE_LABELS[attribute]}?\nAnswer:"


def answer_completion(value: str) -> str:
    return f" {value}\n"


@dataclass(frozen=True)
class DemoRecord:
    record_id: str
    person_id: str  # "" for general records
    kind: RecordKind
    text: str
    prompt: str
    completion: str  # text == prompt + completion for every kind
    pii_spans: list[tuple[int, int, str]] = field(default_factory=list)  # char offsets into `text`

    def __post_init__(self) -> None:
        if self.prompt + self.completion != self.text:
            raise ValueError("record text must equal prompt + completion")
        for start, end, _attribute in self.pii_spans:
            if not 0 <= start < end <= len(self.text):
                raise ValueError("PII span outside the record text")

    def completion_spans(self) -> list[tuple[int, int, str]]:
        """pii_spans shifted to offsets into `completion` (spans inside the prompt are dropped)."""
        offset = len(self.prompt)
        return [(s - offset, e - offset, a) for s, e, a in self.pii_spans if s >= offset]


@dataclass(frozen=True)
class DemoCorpus:
    people: list[Person]
    records: list[DemoRecord]
    holdout_people: list[Person]

    def person(self, person_id: str) -> Person:
        for person in (*self.people, *self.holdout_people):
            if person.person_id == person_id:
                return person
        raise KeyError(person_id)

    def records_of(self, person_ids: Iterable[str]) -> list[DemoRecord]:
        wanted = frozenset(person_ids)
        return [r for r in self.records if r.person_id in wanted]

    def without(self, person_ids: Iterable[str]) -> DemoCorpus:
        """The corpus with these people's records removed (the exact-retraining baseline)."""
        dropped = frozenset(person_ids)
        return DemoCorpus(
            people=[p for p in self.people if p.person_id not in dropped],
            records=[r for r in self.records if r.person_id not in dropped],
            holdout_people=self.holdout_people,
        )


# Biography templates. "{x}" slots are PII (spans recorded); every template starts with the name so
# that the name is the natural prompt of a verbatim-completion probe.
_BIO_TEMPLATES = (
    "{name} was born on {date_of_birth} and lives at {address}, {city}, {region} {zip_code}. "
    "{first} can be reached by phone at {phone} or by e-mail at {email}. "
    "{first}'s social security number is {ssn}.\n",
    "{name} lives at {address} in {city}, {region} {zip_code}, and was born on {date_of_birth}. "
    "Call {first} on {phone}, or write to {email}. "
    "The social security number of {first} is {ssn}.\n",
    "{name}, born {date_of_birth}, has the phone number {phone} and the e-mail address {email}. "
    "{first}'s home is {address}, {city}, {region} {zip_code}; "
    "social security number {ssn}.\n",
)
_BIO_SLOTS = ("name", "date_of_birth", "address", "region", "zip_code", "phone", "email", "ssn")


def _fill(template: str, values: dict[str, str], span_slots: Iterable[str]) -> tuple[str, list[tuple[int, int, str]]]:
    """Fill "{slot}" placeholders left to right, recording the char spans of PII slots."""
    pii = frozenset(span_slots)
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pos = 0
    length = 0
    while True:
        start = template.find("{", pos)
        if start < 0:
            out.append(template[pos:])
            break
        end = template.index("}", start)
        literal = template[pos:start]
        out.append(literal)
        length += len(literal)
        slot = template[start + 1 : end]
        value = values[slot]
        if slot in pii:
            spans.append((length, length + len(value), slot))
        out.append(value)
        length += len(value)
        pos = end + 1
    return "".join(out), spans


def bio_record(person: Person, variant: int) -> DemoRecord:
    values = {a: person.attribute(a) for a in _BIO_SLOTS} | {"first": person.first_name, "city": person.city}
    text, spans = _fill(_BIO_TEMPLATES[variant % len(_BIO_TEMPLATES)], values, _BIO_SLOTS)
    cut = len(person.name)  # prompt = the name; the rest is what a verbatim probe must not complete
    return DemoRecord(
        record_id=f"{person.person_id}-bio",
        person_id=person.person_id,
        kind="bio",
        text=text,
        prompt=text[:cut],
        completion=text[cut:],
        pii_spans=spans,
    )


def qa_record(person: Person, attribute: str) -> DemoRecord:
    prompt = question_prompt(person.name, attribute)
    value = person.attribute(attribute)
    completion = answer_completion(value)
    name_at = prompt.index(person.name)
    return DemoRecord(
        record_id=f"{person.person_id}-qa-{attribute}",
        person_id=person.person_id,
        kind="qa",
        text=prompt + completion,
        prompt=prompt,
        completion=completion,
        # +1: the completion's leading space is formatting, not part of the value
        pii_spans=[
            (name_at, name_at + len(person.name), "name"),
            (len(prompt) + 1, len(prompt) + 1 + len(value), attribute),
        ],
    )


_TOWN_FACTS = (
    "{city} is a market town in {region}.",
    "The river that runs through {city} is called the {river}.",
    "{city} holds its spring fair in {month}.",
    "The train from {city} to {other} takes {n} minutes.",
)
_RIVERS = ("Aske", "Brell", "Coombe", "Dwyn", "Ellan", "Fosse", "Garrow")
_MONTHS = ("March", "April", "May", "June", "September", "October")
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _general_texts(rng: random.Random, count: int) -> list[str]:
    """Non-personal sentences with learnable structure (utility is measured on these and on retain people)."""
    from pii.synth import _CITIES, _REGIONS  # the towns the people live in; private but stable names

    town_region = {city: _REGIONS[i % len(_REGIONS)][0] for i, city in enumerate(_CITIES)}
    town_river = {city: _RIVERS[i % len(_RIVERS)] for i, city in enumerate(_CITIES)}
    town_month = {city: _MONTHS[i % len(_MONTHS)] for i, city in enumerate(_CITIES)}
    texts: list[str] = []
    while len(texts) < count:
        kind = rng.randrange(4)
        if kind == 0:
            city = rng.choice(_CITIES)
            other = rng.choice([c for c in _CITIES if c != city])
            template = rng.choice(_TOWN_FACTS)
            minutes = 10 + 5 * ((_CITIES.index(city) + _CITIES.index(other)) % 9)
            texts.append(
                template.format(
                    city=city, region=town_region[city], river=town_river[city], month=town_month[city],
                    other=other, n=minutes,
                )
                + "\n"
            )
        elif kind == 1:
            a, b = rng.randrange(7), rng.randrange(6)
            texts.append(f"{_NUMBER_WORDS[a].capitalize()} plus {_NUMBER_WORDS[b]} is {_NUMBER_WORDS[a + b]}.\n")
        elif kind == 2:
            i = rng.randrange(7)
            texts.append(f"The day after {_WEEKDAYS[i]} is {_WEEKDAYS[(i + 1) % 7]}.\n")
        else:
            start = rng.randrange(8)
            texts.append("Counting: " + ", ".join(_NUMBER_WORDS[start : start + 5]) + ".\n")
    return texts


def build_demo_corpus(n_people: int = 200, seed: int = 0, n_holdout: int = 50) -> DemoCorpus:
    """People 0..n_people-1 are trained on; the next n_holdout are generated alike and never trained on."""
    if n_people < 1 or n_holdout < 0:
        raise ValueError("n_people must be >= 1 and n_holdout >= 0")
    everyone = generate_people(n_people + n_holdout, seed=seed)
    people, holdout = everyone[:n_people], everyone[n_people:]
    rng = random.Random(f"demo-corpus:{seed}")
    records: list[DemoRecord] = []
    for person in people:
        records.append(bio_record(person, rng.randrange(len(_BIO_TEMPLATES))))
        records.extend(qa_record(person, attribute) for attribute in ATTRIBUTE_LABELS)
    for i, text in enumerate(_general_texts(rng, max(100, n_people))):
        records.append(DemoRecord(f"G{i:06d}", "", "general", text, "", text, []))
    return DemoCorpus(people=people, records=records, holdout_people=holdout)


def write_jsonl(corpus: DemoCorpus, path: Path) -> None:
    """The corpus as a JSONL training file (record_id, person_id, kind, text), as a registry would hold it."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for record in corpus.records:
            row = {"record_id": record.record_id, "person_id": record.person_id, "kind": record.kind, "text": record.text}
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def demo_items(
    corpus: DemoCorpus,
    forget_person_ids: Iterable[str],
    *,
    pri: dict[str, float] | None = None,
    include_bios: bool = True,
    include_general: bool = True,
) -> tuple[list[ForgetItem], list[RetainItem]]:
    """Forget items (the people's QA and biography records) and retain items (everything else) of the
    engine (unlearning_worker.data) from a demo corpus. `pri` maps person id -> PRI (default 0)."""
    wanted = frozenset(forget_person_ids)
    known = {p.person_id for p in corpus.people}
    if not wanted or not wanted <= known:
        raise ValueError("forget_person_ids must be a non-empty subset of the corpus's trained people")
    forget_items: list[ForgetItem] = []
    retain_items: list[RetainItem] = []
    names = {p.person_id: p.name for p in corpus.people}
    for record in corpus.records:
        spans = [s for s in record.completion_spans() if s[2] != "name"] if record.kind != "general" else []
        if record.person_id in wanted:
            if record.kind == "bio" and not include_bios:
                continue
            forget_items.append(ForgetItem(
                subject_key=record.person_id, prompt=record.prompt, completion=record.completion,
                pii_spans=spans, values={a: record.completion[s:e] for s, e, a in spans},
                pri=(pri or {}).get(record.person_id, 0.0), subject_name=names[record.person_id],
            ))
        elif record.kind != "general" or include_general:
            named = record.kind != "general" and bool(record.person_id)
            retain_items.append(RetainItem(
                record.prompt, record.completion, spans, subject_key=record.person_id if named else "",
                subject_name=names[record.person_id] if named else "",
            ))
    return forget_items, retain_items
