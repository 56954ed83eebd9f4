"""Generated, labelled variants of subjects' identifiers, one family per text transform.

Each `Variant` is a sentence holding one identifier of one person, written the way a transform
describes (an en dash in a phone, a Cyrillic letter in a surname, "five five five ..."), with the
exact character span of the written identifier. The matcher must find that span, for that person,
through the transform of the same name (`pii.textnorm.TRANSFORMS`); "plain" is the control.

Used by tests/pii/test_variants.py (small sets, every transform) and by
tests/benchmarks/bench_matcher.py (large sets, recall per transform, speed, false positives).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pii.identifiers import SubjectIdentifiers
from pii.synth import Person, generate_people

_DASHES = ("\u2013", "\u2011", "\u2012", "\u2212", "\u2014", "\ufe63", "\uff0d")
_SPACES = ("\u00a0", "\u202f", "\u2009", "\u2007", "\u3000", "\u2002")
_INVISIBLES = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e")
_CYRILLIC = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "y": "\u0443", "x": "\u0445",
             "i": "\u0456", "j": "\u0458", "s": "\u0455", "A": "\u0410", "B": "\u0412", "E": "\u0415", "K": "\u041a",
             "M": "\u041c", "H": "\u041d", "O": "\u041e", "P": "\u0420", "C": "\u0421", "T": "\u0422", "X": "\u0425"}
_GREEK = {"o": "\u03bf", "v": "\u03bd", "i": "\u03b9", "A": "\u0391", "B": "\u0392", "E": "\u0395", "Z": "\u0396",
          "H": "\u0397", "I": "\u0399", "K": "\u039a", "M": "\u039c", "N": "\u039d", "O": "\u039f", "T": "\u03a4"}
_ACCENTS = {"a": "áàâäå", "e": "éèêë", "i": "íìîï", "o": "óòôöø", "u": "úùûü", "l": "ł", "c": "ç", "n": "ñ", "d": "đ"}
_DIGIT_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}
_TEMPLATES = (
    "Please contact {v} about the renewal.",
    "Record updated: {v}",
    "The assistant replied that {v} was on file.",
    "{v} — flagged for review.",
    "Details on file ({v}) were confirmed yesterday.",
)


@dataclass(frozen=True)
class Variant:
    text: str
    person_id: str
    kind: str  # name, email, phone, identifier
    transform: str
    start: int
    end: int


def identifiers_of(person: Person) -> SubjectIdentifiers:
    return SubjectIdentifiers(
        full_name=f"{person.first_name} {person.last_name}",
        emails=(person.email,),
        phones=(person.phone,),
        other_identifiers=(person.ssn, person.bank_account),
    )


def _sprinkle(rng: random.Random, value: str, pool: tuple[str, ...], every: int = 3) -> str:
    out = []
    for i, ch in enumerate(value):
        out.append(ch)
        if 0 < i < len(value) - 1 and rng.random() < 1 / every:
            out.append(rng.choice(pool))
    return "".join(out)


def _swap(rng: random.Random, value: str, table: dict[str, str], share: float = 0.5) -> str:
    swapped = "".join(table[c] if c in table and rng.random() < share else c for c in value)
    if swapped == value:  # at least one look-alike
        for i, c in enumerate(value):
            if c in table:
                return value[:i] + table[c] + value[i + 1 :]
    return swapped


def _spell(rng: random.Random, digits: str) -> str:
    words = _DIGIT_WORDS[rng.choice(tuple(_DIGIT_WORDS))]
    return rng.choice((" ", ", ", "-")).join(words[int(d)] for d in digits if d.isdigit())


def _obfuscate_email(rng: random.Random, email: str) -> str:
    local, domain = email.split("@")
    at = rng.choice((" at ", " [at] ", " (at) ", " @ ", "{at}", " AT "))
    dot = rng.choice((" dot ", " [dot] ", "(dot)", " DOT ", "."))
    return local.replace(".", dot if dot != "." else ".") + at + domain.replace(".", dot)


Writer = Callable[[random.Random, Person], Iterator[tuple[str, str]]]


def _plain(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "name", f"{p.first_name} {p.last_name}"
    yield "email", p.email
    yield "phone", p.phone
    yield "identifier", p.ssn


def _separators(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "phone", p.phone.replace("-", rng.choice(_DASHES))
    yield "phone", p.phone.replace("-", rng.choice(_SPACES))
    yield "identifier", p.ssn.replace("-", rng.choice(_DASHES))
    yield "identifier", p.bank_account.replace(" ", rng.choice(_SPACES))
    yield "name", f"{p.first_name}{rng.choice(_SPACES)}{p.last_name}"


def _width(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    full = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
    yield "phone", "".join(full.get(c, c) for c in p.phone)
    yield "identifier", "".join(full.get(c, c) for c in p.ssn)
    yield "email", "".join(full.get(c, c) for c in p.email)
    bold = {**{chr(65 + i): chr(0x1D400 + i) for i in range(26)}, **{chr(97 + i): chr(0x1D41A + i) for i in range(26)}}
    yield "name", "".join(bold.get(c, c) for c in f"{p.first_name} {p.last_name}")


def _invisibles(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "name", f"{_sprinkle(rng, p.first_name, _INVISIBLES)} {_sprinkle(rng, p.last_name, _INVISIBLES)}"
    yield "email", _sprinkle(rng, p.email, _INVISIBLES, every=4)
    yield "phone", _sprinkle(rng, p.phone, _INVISIBLES)
    yield "identifier", _sprinkle(rng, p.ssn, _INVISIBLES)


def _confusables(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "name", f"{_swap(rng, p.first_name, _CYRILLIC)} {_swap(rng, p.last_name, _CYRILLIC)}"
    yield "name", f"{_swap(rng, p.first_name, _GREEK)} {_swap(rng, p.last_name, _GREEK)}"
    local, domain = p.email.split("@")
    yield "email", f"{_swap(rng, local, _CYRILLIC)}@{domain}"


def _diacritics(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    table = {c: rng.choice(options) for c, options in _ACCENTS.items()}
    yield "name", f"{_swap(rng, p.first_name, table)} {_swap(rng, p.last_name, table)}"


def _case(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    name = f"{p.first_name} {p.last_name}"
    yield "name", name.lower()
    yield "name", name.upper()
    yield "email", p.email.upper()


def _spelled(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "phone", _spell(rng, p.phone)
    yield "identifier", _spell(rng, p.ssn)


def _at_dot(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "email", _obfuscate_email(rng, p.email)
    yield "email", _obfuscate_email(rng, p.email)


def _encoded(rng: random.Random, p: Person) -> Iterator[tuple[str, str]]:
    yield "email", base64.b64encode(p.email.encode()).decode()
    yield "phone", base64.b64encode(p.phone.encode()).decode()
    yield "identifier", p.ssn.encode().hex()


WRITERS: dict[str, Writer] = {
    "plain": _plain,
    "separators": _separators,
    "width": _width,
    "invisibles": _invisibles,
    "confusables": _confusables,
    "diacritics": _diacritics,
    "case": _case,
    "spelled_digits": _spelled,
    "at_dot": _at_dot,
    "encoded": _encoded,
}


def generate_variants(people: list[Person], *, seed: int = 0, transforms: tuple[str, ...] = tuple(WRITERS)) -> list[Variant]:
    rng = random.Random(seed)
    out: list[Variant] = []
    for person in people:
        for transform in transforms:
            for kind, written in WRITERS[transform](rng, person):
                template = rng.choice(_TEMPLATES)
                start = template.index("{v}")
                text = template.replace("{v}", written)
                out.append(Variant(text, person.person_id, kind, transform, start, start + len(written)))
    return out


def subjects_and_variants(n: int, *, seed: int = 0) -> tuple[list[Person], list[Variant]]:
    people = generate_people(n, seed=seed)
    return people, generate_variants(people, seed=seed)
