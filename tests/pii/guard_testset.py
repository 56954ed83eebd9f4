"""A labelled set of chatbot-style model outputs, to measure the guard's recall and false positives.

Positives: sentences about a *subject* (a person with suppression rules) that contain one of their
identifiers, written in one of many forms (phone with dashes, spaces, dots, brackets, +1 or 00
prefixes; e-mail in upper, lower or mixed case; name in full, "Last, First", "F. Last", capitals,
extra spaces, possessive; SSN, card and IBAN grouped or not; passport). Negatives: the same kinds of
sentences about *other people*: distractors from pii.synth.distractors (same first name, same
surname, surname one letter off), random other people, and a subject's first name alone.

A negative is marked `ambiguous` when its text contains, character for character after
normalisation, a form that is protected for some subject (for example "A. Quartermaine" written
about Alan Quartermaine while Ada Quartermaine is a subject): no filter that works on text can
tell those apart, so they are reported separately rather than counted as false positives.

Used by tests/pii/test_matcher.py and tests/benchmarks/bench_guard.py. Pure: no Django. Deterministic
in its seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pii.identifiers import SubjectIdentifiers
from pii.matcher import name_keys, name_tokens
from pii.normalize import normalize_email, normalize_identifier, normalize_phone
from pii.synth import Person, distractors, generate_people


@dataclass(frozen=True)
class LabelledOutput:
    text: str
    # Whose protected value the text holds; None for a negative (other people only).
    subject_ref: str | None
    attribute: str  # name, phone, email, ssn, credit_card, bank_account, passport, first_name
    form: str  # how the value was written, e.g. "phone:+1-spaces"
    value: str  # the value as written in `text` (test data only, fictitious people)
    ambiguous: bool = False

    @property
    def positive(self) -> bool:
        return self.subject_ref is not None


def subject_ref_for(person: Person) -> str:
    """A stable pseudonymous reference for a synthetic person (test data only)."""
    return f"subj-{person.person_id}"


def subject_identifiers(person: Person) -> SubjectIdentifiers:
    """What such a subject would give on the request form."""
    return SubjectIdentifiers(
        full_name=person.name,
        emails=(person.email,),
        phones=(person.phone,),
        other_identifiers=(person.ssn, person.passport, person.credit_card, person.bank_account),
    )


# -- written forms -----------------------------------------------------------------------------


def phone_forms(phone: str) -> dict[str, str]:
    a, b, c = phone.split("-")
    return {
        "dashes": f"{a}-{b}-{c}",
        "spaces": f"{a} {b} {c}",
        "dots": f"{a}.{b}.{c}",
        "parentheses": f"({a}) {b}-{c}",
        "plus1-spaces": f"+1 {a} {b} {c}",
        "plus1-dashes": f"+1-{a}-{b}-{c}",
        "plus1-parentheses": f"+1 ({a}) {b}-{c}",
        "00-prefix": f"001 {a} {b} {c}",
        "digits": f"{a}{b}{c}",
    }


def email_forms(email: str) -> dict[str, str]:
    user, domain = email.split("@")
    mixed = "".join(ch.upper() if i % 2 else ch for i, ch in enumerate(user))
    return {"lower": email.lower(), "upper": email.upper(), "mixed": f"{mixed}@{domain.capitalize()}"}


def name_forms(first: str, last: str) -> dict[str, str]:
    return {
        "full": f"{first} {last}",
        "last-first": f"{last}, {first}",
        "initial": f"{first[0]}. {last}",
        "initial-nodot": f"{first[0]} {last}",
        "caps": f"{first.upper()} {last.upper()}",
        "caps-last-first": f"{last.upper()}, {first.upper()}",
        "extra-spaces": f"{first}   {last}",
        "possessive": f"{first} {last}'s",
    }


def ssn_forms(ssn: str) -> dict[str, str]:
    return {"dashes": ssn, "spaces": ssn.replace("-", " "), "digits": ssn.replace("-", "")}


def card_forms(card: str) -> dict[str, str]:
    return {"spaces": card, "digits": card.replace(" ", ""), "dashes": card.replace(" ", "-")}


def iban_forms(iban: str) -> dict[str, str]:
    return {"grouped": iban, "ungrouped": iban.replace(" ", ""), "lower-ungrouped": iban.replace(" ", "").lower()}


def passport_forms(passport: str) -> dict[str, str]:
    return {"plain": passport, "lower": passport.lower()}


_FORMS = {
    "phone": lambda p: phone_forms(p.phone),
    "email": lambda p: email_forms(p.email),
    "name": lambda p: name_forms(p.first_name, p.last_name),
    "ssn": lambda p: ssn_forms(p.ssn),
    "credit_card": lambda p: card_forms(p.credit_card),
    "bank_account": lambda p: iban_forms(p.bank_account),
    "passport": lambda p: passport_forms(p.passport),
}

# Chatbot-style sentences. {v} is the value; {n} the person's name as a plain "First Last" (used
# only in templates for attributes other than the name, and only when the name is also theirs).
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "phone": (
        "Sure! You can reach them on {v} during office hours.",
        "The number I have on file is {v}. Is there anything else I can help with?",
        "Based on the records, the contact phone is {v} (mobile).",
        "Call {v} and ask for the accounts team.",
        "Here is the information you asked for:\n- Phone: {v}\n- Preferred time: mornings",
    ),
    "email": (
        "Their e-mail address is {v}, but please be mindful of privacy.",
        "You could write to {v} to follow up on the invoice.",
        "Contact: {v}. Replies usually take two working days.",
        "I found this address in the customer notes: <{v}>",
    ),
    "name": (
        "The account holder is {v}, who opened it in 2019.",
        "According to the document, {v} signed the lease in March.",
        "I believe the author you are thinking of is {v}.",
        "Here is a summary of the complaint filed by {v}: the parcel arrived damaged.",
        "Customer: {v}\nStatus: active\nTier: gold",
        "As far as I know, {v} was the project lead at the time.",
    ),
    "ssn": (
        "The social security number on the form reads {v}.",
        "SSN: {v} (please verify before submitting).",
        "I can see the SSN {v} in the uploaded file.",
    ),
    "credit_card": (
        "The card used for the order was {v}, expiring next year.",
        "Payment details: card number {v}.",
        "The transaction was charged to {v} on Tuesday.",
    ),
    "bank_account": (
        "Refunds go to the IBAN {v}.",
        "Bank account (IBAN): {v}, held at a local branch.",
        "Please transfer the deposit to {v} before Friday.",
    ),
    "passport": (
        "The passport number recorded is {v}.",
        "Travel document: passport {v}, issued in 2016.",
        "I see passport no. {v} in the booking.",
    ),
}

_FIRST_NAME_TEMPLATES = (
    "{v} asked me to remind you about the meeting tomorrow.",
    "Hello {v}! How can I help you today?",
    "My friend {v} recommends the lentil soup.",
)

ATTRIBUTES = tuple(_TEMPLATES)


def protected_forms(people: Iterable[Person]) -> dict[str, set[str]]:
    """Normalised protected values per kind, in plaintext: test-side bookkeeping only.

    Used to label ambiguous negatives; the guard itself only ever holds keyed hashes.
    """
    forms: dict[str, set[str]] = {"name": set(), "email": set(), "phone": set(), "identifier": set()}
    for person in people:
        ids = subject_identifiers(person)
        forms["name"] |= name_keys(ids.full_name)
        forms["email"].update(normalize_email(e) for e in ids.emails)
        forms["phone"].update(k for k in (normalize_phone(p) for p in ids.phones) if k)
        forms["identifier"].update(normalize_identifier(o) for o in ids.other_identifiers)
    return forms


def _collides(attribute: str, value: str, protected: dict[str, set[str]]) -> bool:
    if attribute == "name":
        return " ".join(name_tokens(value)) in protected["name"]
    if attribute == "email":
        # The local part of an e-mail often spells a name ("ada.quartermaine42@"); if that name
        # is some subject's, the guard rightly flags it.
        local_name = " ".join(name_tokens(value.split("@")[0]))
        return normalize_email(value) in protected["email"] or local_name in protected["name"]
    if attribute == "phone":
        return normalize_phone(value) in protected["phone"]
    if attribute == "first_name":
        return False
    return normalize_identifier(value) in protected["identifier"]


def _outputs_for(
    person: Person, subject_ref: str | None, rng: random.Random, attributes: Sequence[str], all_forms: bool
) -> list[LabelledOutput]:
    out: list[LabelledOutput] = []
    for attribute in attributes:
        forms = _FORMS[attribute](person)
        chosen = list(forms.items()) if all_forms else [rng.choice(list(forms.items()))]
        for form, value in chosen:
            template = rng.choice(_TEMPLATES[attribute])
            out.append(
                LabelledOutput(
                    text=template.format(v=value),
                    subject_ref=subject_ref,
                    attribute=attribute,
                    form=f"{attribute}:{form}",
                    value=value,
                )
            )
    return out


def generate_testset(
    subjects: Sequence[Person],
    *,
    distractors_per_subject: int = 3,
    other_people: int = 500,
    seed: int = 0,
) -> list[LabelledOutput]:
    """Positives for every subject in every form, plus labelled negatives about other people."""
    if distractors_per_subject < 0 or other_people < 0:
        raise ValueError("counts must be >= 0")
    rng = random.Random(f"guard-testset:{seed}")
    protected = protected_forms(subjects)
    subject_names = {p.name for p in subjects}
    outputs: list[LabelledOutput] = []
    for person in subjects:
        outputs.extend(_outputs_for(person, subject_ref_for(person), rng, ATTRIBUTES, all_forms=True))
        # Negatives about people who share part of the subject's name.
        for other in distractors(person, count=distractors_per_subject, seed=seed):
            outputs.extend(_outputs_for(other, None, rng, ATTRIBUTES, all_forms=False))
            outputs.extend(
                _negative_name_forms(other, rng, count=3)
            )
        template = rng.choice(_FIRST_NAME_TEMPLATES)
        outputs.append(
            LabelledOutput(
                text=template.format(v=person.first_name),
                subject_ref=None,
                attribute="first_name",
                form="first_name:alone",
                value=person.first_name,
            )
        )
    randoms = [p for p in generate_people(other_people * 2, seed=seed + 7919) if p.name not in subject_names]
    for other in randoms[:other_people]:
        outputs.extend(_outputs_for(other, None, rng, ATTRIBUTES, all_forms=False))
    return [_label_ambiguity(o, protected) for o in outputs]


def _negative_name_forms(person: Person, rng: random.Random, *, count: int) -> list[LabelledOutput]:
    forms = list(name_forms(person.first_name, person.last_name).items())
    out = []
    for form, value in rng.sample(forms, k=min(count, len(forms))):
        out.append(
            LabelledOutput(
                text=rng.choice(_TEMPLATES["name"]).format(v=value),
                subject_ref=None,
                attribute="name",
                form=f"name:{form}",
                value=value,
            )
        )
    return out


def _label_ambiguity(output: LabelledOutput, protected: dict[str, set[str]]) -> LabelledOutput:
    if output.positive or not _collides(output.attribute, output.value, protected):
        return output
    return LabelledOutput(
        text=output.text,
        subject_ref=None,
        attribute=output.attribute,
        form=output.form,
        value=output.value,
        ambiguous=True,
    )
