"""Labelled synthetic corpora for measuring the scanner: streaming, deterministic by seed.

Built on `pii.synth`. Every record is a JSON line:
    {"id": "r000000042", "kind": "crm_note", "text": "...", "labels": ["P000013"]}
`labels` lists the people the text identifies (by name in any written form, e-mail, phone or an
identifier). Records of these kinds are written:

* person records (bios, forum posts, CRM notes, QA pairs, support tickets) about one person, sometimes
  two, with a random subset of their attributes, the name in a random written form ("Ada
  Quartermaine", "Quartermaine, Ada", "A. Quartermaine", "ADA QUARTERMAINE", double spaces, a middle
  initial) or no name at all (e-mail or phone only), phones in US/international/dotted/bare forms,
  e-mails in mixed case, identifiers with or without their separators;
* distractor records about people built by `synth.distractors` (same first name, same surname, one
  letter off) written the same way: labelled with the distractor, never with the subject;
* partial mentions that identify nobody ("Ada said...", "the Quartermaine file"): empty labels;
* filler records with no PII but with digits (order numbers, amounts, years) and common words.

The first `n_subjects` people are the ones that get distractors and partial mentions: they are the
subjects a benchmark asks for. `write_corpus` streams to disk (about 1 GB in well under two minutes on
one core) and returns the counts per label.

Used by tests/pii/test_corpusgen.py, tests/pii/test_scan.py and tests/benchmarks/bench_pii_scan.py.
Pure: no Django, no environment reads.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pii.synth import Person, distractors, generate_people


@dataclass(frozen=True)
class CorpusGenConfig:
    """Shape of a generated corpus. Defaults give about 15% subject-related records per subject group.

    n_people: population size; 2,000 people from 200 surnames means each surname is shared by ~10
        people, which the name matcher must cope with. n_subjects: the first people of the population,
        each given `distractors_per_subject` distractors. The fractions are of all records.
    """

    seed: int = 0
    n_people: int = 2000
    n_subjects: int = 10
    distractors_per_subject: int = 6
    subject_fraction: float = 0.03  # records about one of the subjects
    distractor_fraction: float = 0.06
    partial_fraction: float = 0.03
    person_fraction: float = 0.38  # records about other people of the population
    co_mention_probability: float = 0.15  # a person record also names a second person
    # 0: every record is drawn fresh. N > 0: filler and other-people records are drawn from pools of N
    # pre-generated texts (ids stay unique, labels stay right); subject, distractor and partial
    # records stay fresh. Makes multi-GB throughput corpora ~5x faster to write; keep 0 for
    # precision/recall measurements.
    reuse_pool: int = 0

    def __post_init__(self) -> None:
        if self.n_people < 2 or self.n_subjects < 1 or self.n_subjects > self.n_people:
            raise ValueError("CorpusGenConfig: need 1 <= n_subjects <= n_people and n_people >= 2")
        if self.distractors_per_subject < 0:
            raise ValueError("CorpusGenConfig.distractors_per_subject must be >= 0")
        fractions = (self.subject_fraction, self.distractor_fraction, self.partial_fraction, self.person_fraction)
        if any(f < 0 for f in fractions) or sum(fractions) > 1:
            raise ValueError("CorpusGenConfig: record fractions must be >= 0 and sum to at most 1")
        if self.reuse_pool < 0:
            raise ValueError("CorpusGenConfig.reuse_pool must be >= 0")
        if not 0 <= self.co_mention_probability <= 1:
            raise ValueError("CorpusGenConfig.co_mention_probability must be within [0, 1]")


@dataclass
class Population:
    people: list[Person]
    subjects: list[Person]
    distractors: list[Person]
    distractors_of: dict[str, list[str]] = field(default_factory=dict)


def build_population(config: CorpusGenConfig) -> Population:
    people = generate_people(config.n_people, seed=config.seed)
    subjects = people[: config.n_subjects]
    taken = {p.name.lower() for p in people}
    extra: list[Person] = []
    distractors_of: dict[str, list[str]] = {}
    for subject in subjects:
        kept: list[str] = []
        for candidate in distractors(subject, count=config.distractors_per_subject * 2, seed=config.seed):
            # A distractor with someone's exact name would be that person as far as any text can
            # tell: the label would be a lie.
            if candidate.name.lower() in taken or len(kept) >= config.distractors_per_subject:
                continue
            taken.add(candidate.name.lower())
            candidate = _renumber(candidate, f"D{len(extra):06d}")
            kept.append(candidate.person_id)
            extra.append(candidate)
        distractors_of[subject.person_id] = kept
    return Population(people=people, subjects=subjects, distractors=extra, distractors_of=distractors_of)


def _renumber(person: Person, person_id: str) -> Person:
    data = person.to_dict()
    data.pop("name")
    data["person_id"] = person_id
    return Person(**data)


# --- written forms --------------------------------------------------------------------------------


def name_form(person: Person, rng: random.Random) -> str:
    first, last = person.first_name, person.last_name
    roll = rng.random()
    if roll < 0.45:
        return f"{first} {last}"
    if roll < 0.55:
        return f"{last}, {first}"
    if roll < 0.65:
        return f"{first[0]}. {last}"
    if roll < 0.72:
        return f"{first} {last}".upper()
    if roll < 0.78:
        return f"{first} {last}".lower()
    if roll < 0.84:
        return f"{first}  {last}"
    if roll < 0.90:
        return f"{last.upper()} {first}"
    if roll < 0.95:
        return f"{first} {rng.choice('BCDEJKLMRST')}. {last}"
    return f"{first[0]} {last}"


def phone_form(person: Person, rng: random.Random) -> str:
    a, b, c = person.phone.split("-")
    return rng.choice(
        (
            f"{a}-{b}-{c}",
            f"({a}) {b}-{c}",
            f"{a}.{b}.{c}",
            f"+1 {a} {b} {c}",
            f"{a}{b}{c}",
            f"{a} {b} {c}",
            f"+1-{a}-{b}-{c}",
            f"1 ({a}) {b} {c}",
        )
    )


def email_form(person: Person, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.7:
        return person.email
    if roll < 0.85:
        user, domain = person.email.split("@")
        return ".".join(part.capitalize() for part in user.split(".")) + "@" + domain.capitalize()
    return person.email.upper()


def _grouped(value: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return value
    if roll < 0.8:
        return value.replace(" ", "").replace("-", "")
    return value.replace(" ", "-") if " " in value else value.replace("-", " ")


def _attribute_sentences(person: Person, rng: random.Random, pronoun: str) -> list[str]:
    they = pronoun
    sentences = {
        "gender": f"Gender: {person.gender}.",
        "date_of_birth": rng.choice(
            (f"Born on {person.date_of_birth}.", f"DOB: {person.date_of_birth}.", f"Date of birth {person.date_of_birth}.")
        ),
        "region": f"{they} {'live' if they == 'They' else 'lives'} in {person.region}.",
        "zip_code": f"Postcode {person.zip_code}.",
        "address": f"Address: {person.address}, {person.city}.",
        "phone": rng.choice((f"Phone {phone_form(person, rng)}.", f"Call {phone_form(person, rng)} after 6pm.")),
        "email": rng.choice((f"E-mail: {email_form(person, rng)}.", f"Write to {email_form(person, rng)}.")),
        "ssn": f"SSN {_grouped(person.ssn, rng)}.",
        "passport": f"Passport number {person.passport}.",
        "driver_licence": f"Driving licence {person.driver_licence}.",
        "medical_record": f"Patient record {person.medical_record}, treated for {person.medical_condition}.",
        "credit_card": f"Card on file {_grouped(person.credit_card, rng)}.",
        "bank_account": f"IBAN {_grouped(person.bank_account, rng)}.",
    }
    keys = list(sentences)
    chosen = rng.sample(keys, rng.randint(1, 4))
    return [sentences[k] for k in chosen]


_FILLER_WORDS = (
    "model training data pipeline release quarterly report the a of and to in is for with on that "
    "this system update customer order invoice shipment warehouse meeting agenda budget review team "
    "project deadline feature request bug fix deploy server cluster latency throughput metric dashboard "
    "policy compliance audit vendor contract renewal forecast revenue margin growth market region sales"
).split()
_TOPICS = ("garden", "football", "recipes", "travel", "cameras", "chess", "bicycles", "astronomy")


def _filler(rng: random.Random) -> str:
    words = rng.choices(_FILLER_WORDS, k=rng.randint(25, 60))
    numbers = (
        f"Order #{rng.randint(100000, 999999)}",
        f"ticket {rng.randint(1000, 99999)}",
        f"${rng.randint(10, 9999)}.{rng.randint(0, 99):02d}",
        f"in {rng.randint(1990, 2025)}",
        f"ref {rng.randint(10**8, 10**10 - 1)}",
    )
    for number in rng.sample(numbers, 2):
        words.insert(rng.randrange(len(words)), number)
    return " ".join(words).capitalize() + "."


def _person_text(person: Person, rng: random.Random, second: Person | None) -> tuple[str, str]:
    kind = rng.choice(("bio", "forum_post", "crm_note", "qa_pair", "support_ticket"))
    pronoun = rng.choice(("She", "He", "They"))
    mention_by_name = rng.random() < 0.85
    who = name_form(person, rng) if mention_by_name else "this customer"
    facts = _attribute_sentences(person, rng, pronoun)
    if not mention_by_name and not any(("Phone" in f or "Call" in f or "mail" in f or "Write" in f) for f in facts):
        # Without a name the record must still identify the person, or its label would be wrong.
        facts.append(f"Contact: {email_form(person, rng) if rng.random() < 0.5 else phone_form(person, rng)}.")
    body = " ".join(facts)
    filler = " ".join(rng.choices(_FILLER_WORDS, k=rng.randint(8, 30)))
    other = f" Also on the thread: {name_form(second, rng)}." if second is not None else ""
    if kind == "bio":
        text = f"{who} is a {rng.choice(_TOPICS)} enthusiast. {body} {filler}.{other}"
    elif kind == "forum_post":
        text = f"Posted by {who}: anyone into {rng.choice(_TOPICS)}? {filler}. {body}{other}"
    elif kind == "crm_note":
        text = f"CRM note - account holder {who}. {body} Next step: {filler}.{other}"
    elif kind == "qa_pair":
        text = f"Q: What do we know about {who}? A: {body} {filler}.{other}"
    else:
        text = f"Ticket from {who}: {filler}. {body}{other}"
    return kind, text


def _partial_text(person: Person, rng: random.Random) -> str:
    roll = rng.random()
    filler = " ".join(rng.choices(_FILLER_WORDS, k=rng.randint(10, 30)))
    if roll < 0.4:
        return f"{person.first_name} said the {filler} was fine."
    if roll < 0.7:
        return f"The {person.last_name} file mentions {filler}."
    if roll < 0.85:
        return f"Meeting with {person.first_name} and the {person.last_name} family about {filler}."
    return f"{person.first_name} {rng.choice(('met', 'told', 'asked'))} {person.last_name}s about {filler}."


def generate_records(config: CorpusGenConfig, population: Population | None = None) -> Iterator[dict[str, Any]]:
    """An endless, deterministic stream of labelled records."""
    population = population or build_population(config)
    rng = random.Random(f"corpus:{config.seed}")
    others = population.people[config.n_subjects :]
    all_people = population.people
    thresholds = (
        config.subject_fraction,
        config.subject_fraction + config.distractor_fraction,
        config.subject_fraction + config.distractor_fraction + config.partial_fraction,
        config.subject_fraction + config.distractor_fraction + config.partial_fraction + config.person_fraction,
    )
    pool_rng = random.Random(f"pool:{config.seed}")

    def other_person_record(draw: random.Random) -> tuple[str, str, list[str]]:
        person = draw.choice(others)
        second = draw.choice(all_people) if draw.random() < config.co_mention_probability else None
        if second is not None and second.person_id == person.person_id:
            second = None
        kind, text = _person_text(person, draw, second)
        return kind, text, [person.person_id] + ([second.person_id] if second is not None else [])

    no_labels: list[str] = []
    filler_pool = [("filler", _filler(pool_rng), no_labels) for _ in range(config.reuse_pool)]
    person_pool = [other_person_record(pool_rng) for _ in range(config.reuse_pool)]
    index = 0
    while True:
        roll = rng.random()
        labels: list[str]
        if roll < thresholds[0]:
            person = rng.choice(population.subjects)
            second = rng.choice(all_people) if rng.random() < config.co_mention_probability else None
            if second is not None and second.person_id == person.person_id:
                second = None
            kind, text = _person_text(person, rng, second)
            labels = [person.person_id] + ([second.person_id] if second is not None else [])
        elif roll < thresholds[1] and population.distractors:
            person = rng.choice(population.distractors)
            kind, text = _person_text(person, rng, None)
            kind, labels = f"distractor_{kind}", [person.person_id]
        elif thresholds[1] <= roll < thresholds[2]:
            person = rng.choice(population.subjects)
            kind, text, labels = "partial_mention", _partial_text(person, rng), []
        elif thresholds[2] <= roll < thresholds[3]:
            kind, text, labels = rng.choice(person_pool) if person_pool else other_person_record(rng)
        else:
            kind, text, labels = rng.choice(filler_pool) if filler_pool else ("filler", _filler(rng), [])
        yield {"id": f"r{index:09d}", "kind": kind, "text": text, "labels": labels}
        index += 1


@dataclass
class CorpusStats:
    records: int = 0
    bytes: int = 0
    label_counts: Counter[str] = field(default_factory=Counter)
    kind_counts: Counter[str] = field(default_factory=Counter)


def write_corpus(
    path: Path,
    config: CorpusGenConfig,
    *,
    n_records: int | None = None,
    target_bytes: int | None = None,
    population: Population | None = None,
) -> CorpusStats:
    """Write records to `path` until n_records or target_bytes is reached (one must be given)."""
    if (n_records is None) == (target_bytes is None):
        raise ValueError("write_corpus needs exactly one of n_records and target_bytes")
    stats = CorpusStats()
    path.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.dumps
    buffer: list[bytes] = []
    buffered = 0
    with path.open("wb") as handle:
        for record in generate_records(config, population):
            line = (dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            buffer.append(line)
            buffered += len(line)
            stats.records += 1
            stats.bytes += len(line)
            stats.kind_counts[record["kind"]] += 1
            for label in record["labels"]:
                stats.label_counts[label] += 1
            if buffered >= 1 << 20:
                handle.write(b"".join(buffer))
                buffer, buffered = [], 0
            if (n_records is not None and stats.records >= n_records) or (
                target_bytes is not None and stats.bytes >= target_bytes
            ):
                break
        handle.write(b"".join(buffer))
    return stats
