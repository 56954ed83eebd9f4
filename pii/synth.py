"""Deterministic generator of fictitious people.

Production code, not only a fixture: the counterfactual unlearning method draws its teacher's
fictitious people from it (unlearning_worker/methods/counterfactual.py), and the verifier its
never-seen control, membership inference's neighbours and the many-shot attack's fabricated examples
(unlearning_worker/verify/attacks/common.py: fictitious_people; unlearning_worker/verify/attacks/blackbox.py). Tests, benchmarks and the demo corpus use it too.

Every person carries the attribute types that the PII Risk Index scores (name, gender, date of
birth, region, zip code, detailed address, phone, e-mail, SSN, passport, driver licence, medical
record, credit card, bank account). Names are drawn from invented syllables so that no generated
person is a real one. Distractors share part of a subject's name (same first name, same surname,
one letter off) and are what a scanner must *not* match.

Pure: no Django, no environment reads. The same seed always gives the same people.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

_FIRST_SYLLABLES = (
    "al", "be", "ca", "da", "el", "fa", "ga", "ha", "is", "jo", "ka", "li", "ma", "ne", "or",
    "pa", "qui", "ro", "sa", "ta", "ul", "va", "wi", "xe", "ya", "zo",
)
_FIRST_ENDINGS = ("ra", "na", "lo", "mir", "dric", "sa", "ven", "tte", "rin", "bel", "ric", "dan")
_LAST_SYLLABLES = (
    "quar", "ter", "brom", "vel", "dun", "hal", "mor", "pen", "rath", "sil", "thorn", "wick",
    "ash", "bel", "cor", "fen", "gar", "holt", "kest", "lan",
)
_LAST_ENDINGS = ("maine", "ford", "wick", "ley", "ton", "bury", "croft", "well", "hurst", "by")
_REGIONS = (
    ("Northmere", "NM"), ("Eastvale", "EV"), ("Southport Downs", "SD"), ("Westbrook", "WB"),
    ("Highcairn", "HC"), ("Lowfield", "LF"), ("Riverholm", "RH"), ("Oakhaven", "OH"),
)
_CITIES = ("Ambersley", "Brackwater", "Coldharbour", "Dunmere", "Elmstead", "Fairhollow", "Greyridge")
_STREETS = ("Linden", "Copper", "Harrow", "Mill", "Quarry", "Willow", "Station", "Orchard", "Tanner")
_STREET_KINDS = ("Street", "Road", "Lane", "Avenue", "Close", "Way")
_CONDITIONS = ("type 2 diabetes", "asthma", "hypertension", "coeliac disease", "migraine", "epilepsy")
GENDERS = ("female", "male", "non-binary")

# The attribute names, in the order the PRI policy and the attacks use.
ATTRIBUTES = (
    "name", "gender", "date_of_birth", "region", "zip_code", "address", "phone", "email", "ssn",
    "passport", "driver_licence", "medical_record", "credit_card", "bank_account",
)


@dataclass(frozen=True)
class Person:
    """One fictitious person. All values are strings as they would be written in text."""

    person_id: str
    first_name: str
    last_name: str
    gender: str
    date_of_birth: str  # ISO 8601, YYYY-MM-DD
    region: str
    zip_code: str
    address: str  # detailed street address, without region and zip
    city: str
    phone: str  # NNN-NNN-NNNN
    email: str
    ssn: str  # NNN-NN-NNNN
    passport: str
    driver_licence: str
    medical_record: str
    medical_condition: str
    credit_card: str  # 16 digits in groups of four, Luhn-valid
    bank_account: str  # IBAN in groups of four, mod-97 valid

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def attribute(self, attribute: str) -> str:
        """The written value of one of ATTRIBUTES."""
        if attribute == "name":
            return self.name
        return str(getattr(self, attribute))

    def to_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["name"] = self.name
        return data


def _luhn_complete(prefix_digits: str) -> str:
    """Append the Luhn check digit to a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(prefix_digits)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return prefix_digits + str((10 - total % 10) % 10)


def _iban(rng: random.Random) -> str:
    """A mod-97-valid IBAN in the fictitious 'GB' style: GBkk BANK ssssss aaaaaaaa."""
    bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
    bban = bank + "".join(rng.choice("0123456789") for _ in range(14))
    rearranged = bban + "GB00"
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    check = 98 - int(numeric) % 97
    iban = f"GB{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _first_name(rng: random.Random) -> str:
    return (rng.choice(_FIRST_SYLLABLES) + rng.choice(_FIRST_ENDINGS)).capitalize()


def _last_name(rng: random.Random) -> str:
    return (rng.choice(_LAST_SYLLABLES) + rng.choice(_LAST_ENDINGS)).capitalize()


def _person(rng: random.Random, index: int, first_name: str, last_name: str) -> Person:
    region, region_code = rng.choice(_REGIONS)
    year = rng.randint(1940, 2004)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    email_user = f"{first_name.lower()}.{last_name.lower()}{rng.randint(1, 99)}"
    phone = f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{_digits(rng, 4)}"
    card = _luhn_complete("4" + _digits(rng, 14))
    return Person(
        person_id=f"P{index:06d}",
        first_name=first_name,
        last_name=last_name,
        gender=rng.choice(GENDERS),
        date_of_birth=f"{year:04d}-{month:02d}-{day:02d}",
        region=region,
        zip_code=f"{region_code}{rng.randint(1, 99)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
        address=f"{rng.randint(1, 240)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}",
        city=rng.choice(_CITIES),
        phone=phone,
        email=f"{email_user}@example.com",
        ssn=f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{_digits(rng, 4)}",
        passport=f"{rng.choice('KLMNPRTX')}{_digits(rng, 8)}",
        driver_licence=f"{last_name[:5].upper():<5}".replace(" ", "9") + _digits(rng, 6) + rng.choice("ABCD") + "9",
        medical_record=f"MRN-{_digits(rng, 7)}",
        medical_condition=rng.choice(_CONDITIONS),
        credit_card=" ".join(card[i : i + 4] for i in range(0, 16, 4)),
        bank_account=_iban(rng),
    )


def generate_people(n: int, *, seed: int = 0) -> list[Person]:
    """n distinct fictitious people (distinct full names, e-mails and phones), deterministic in seed."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"people:{seed}")
    people: list[Person] = []
    seen_names: set[str] = set()
    seen_values: set[str] = set()
    while len(people) < n:
        first, last = _first_name(rng), _last_name(rng)
        if f"{first} {last}" in seen_names:
            continue
        person = _person(rng, len(people), first, last)
        if person.email in seen_values or person.phone in seen_values:
            continue
        seen_names.add(person.name)
        seen_values.update((person.email, person.phone))
        people.append(person)
    return people


def distractors(person: Person, *, count: int, seed: int = 0) -> list[Person]:
    """People who share part of `person`'s name but are someone else.

    Kinds, in rotation: same first name and another surname; same surname and another first name;
    surname one letter off. Their other attributes are freshly drawn, so they never share a phone,
    e-mail or identifier with `person`.
    """
    rng = random.Random(f"distractor:{seed}:{person.person_id}")
    out: list[Person] = []
    for i in range(count):
        kind = i % 3
        first, last = person.first_name, person.last_name
        if kind == 0:
            while last == person.last_name:
                last = _last_name(rng)
        elif kind == 1:
            while first == person.first_name:
                first = _first_name(rng)
        else:
            pos = rng.randrange(1, len(last))
            letter = rng.choice([c for c in "aeiourstnl" if c != last[pos]])
            last = last[:pos] + letter + last[pos + 1 :]
        out.append(_person(rng, 900_000 + i, first, last))
    return out
