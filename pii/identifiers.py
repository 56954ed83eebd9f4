"""What a data subject gave us: the one carrier of a subject's identifiers, for every component.

The request desk, the corpus scan, the jobs, the verification facts and the inference guard all
take a `SubjectIdentifiers`. It holds plaintext personal data: never store, log or pass it as a
task argument (its repr shows counts only).

Pure: no Django, no environment reads, nothing heavy imported (the serving guard imports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pii import normalize

# Other identifiers shorter than this (letters and digits only) match too much ordinary text.
MIN_IDENTIFIER_CHARS = 6


@dataclass(frozen=True)
class SubjectIdentifiers:
    """Strings as the subject wrote them; normalisation happens where they are matched.

    other_identifiers: passport, SSN, IBAN, card, licence, medical record numbers... compared on
    their letters and digits only. `require_searchable()` (called by the scan) refuses a subject with
    nothing to search for; a carrier of one field (the guard derives rules field by field) is valid.
    """

    full_name: str = ""
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    other_identifiers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("emails", "phones", "other_identifiers"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"SubjectIdentifiers.{name} must be a sequence of strings, not one string")
            object.__setattr__(self, name, tuple(value))
            if not all(isinstance(v, str) for v in getattr(self, name)):
                raise ValueError(f"SubjectIdentifiers.{name} must contain only strings")
        if not isinstance(self.full_name, str):
            raise ValueError("SubjectIdentifiers.full_name must be a string")
        for email in self.emails:
            if "@" not in email or email.strip().startswith("@") or email.strip().endswith("@"):
                # The value itself is personal data: the message names the field, not the value.
                raise ValueError("SubjectIdentifiers.emails contains a value that is not an e-mail address")
        for phone in self.phones:
            if normalize.normalize_phone(phone) is None:
                raise ValueError(
                    f"SubjectIdentifiers.phones contains a value with fewer than {normalize.PHONE_MIN_DIGITS} digits"
                )

    def __repr__(self) -> str:  # keep plaintext out of logs and tracebacks
        return (
            f"SubjectIdentifiers(<name: {'yes' if self.full_name else 'no'}, {len(self.emails)} e-mails, "
            f"{len(self.phones)} phones, {len(self.other_identifiers)} others>)"
        )

    def name_parts(self) -> list[str]:
        return normalize.normalize_name(self.full_name).replace(",", " ").split()

    def searchable_kinds(self) -> set[str]:
        kinds: set[str] = set()
        if len(self.name_parts()) >= 2:
            kinds.add("name")
        if self.emails:
            kinds.add("email")
        if self.phones:
            kinds.add("phone")
        if any(len(normalize.normalize_identifier(v)) >= MIN_IDENTIFIER_CHARS for v in self.other_identifiers):
            kinds.add("identifier")
        return kinds

    @classmethod
    def usable(
        cls,
        *,
        full_name: str = "",
        emails: Sequence[str] = (),
        phones: Sequence[str] = (),
        other_identifiers: Sequence[str] = (),
    ) -> tuple[SubjectIdentifiers, int]:
        """The values as given, blanks ignored, minus those that cannot be an identifier of their kind
        (an e-mail without "@", a phone with too few digits), and how many were dropped. For stored
        identifiers, where one bad value must not make the whole subject unusable."""
        keep: dict[str, list[str]] = {"emails": [], "phones": [], "other_identifiers": []}
        dropped = 0
        carriers = {
            "emails": lambda v: cls(emails=(v,)),
            "phones": lambda v: cls(phones=(v,)),
            "other_identifiers": lambda v: cls(other_identifiers=(v,)),
        }
        for field, values in (("emails", emails), ("phones", phones), ("other_identifiers", other_identifiers)):
            for value in values:
                value = str(value).strip()
                if not value:
                    continue
                try:
                    carriers[field](value)  # validates the one value
                except ValueError:
                    dropped += 1
                    continue
                keep[field].append(value)
        return cls(full_name=str(full_name).strip(), emails=tuple(keep["emails"]), phones=tuple(keep["phones"]),
                   other_identifiers=tuple(keep["other_identifiers"])), dropped

    def single_fields(self) -> list[SubjectIdentifiers]:
        """One carrier per value (the name, each e-mail, phone and identifier), so that a caller can
        use what is usable and count what is not, value by value (the guard derives its rules so)."""
        parts = [SubjectIdentifiers(full_name=self.full_name)] if self.full_name.strip() else []
        parts += [SubjectIdentifiers(emails=(e,)) for e in self.emails]
        parts += [SubjectIdentifiers(phones=(p,)) for p in self.phones]
        parts += [SubjectIdentifiers(other_identifiers=(o,)) for o in self.other_identifiers]
        return parts

    def require_searchable(self) -> SubjectIdentifiers:
        if not self.searchable_kinds():
            raise ValueError(
                "SubjectIdentifiers needs a full name of at least two words, an e-mail, a phone or an identifier"
            )
        return self
