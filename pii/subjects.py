"""Recognizers for one data subject, built from the identifiers they gave.

Two layers, both derived from `pii.normalize` so that the scanner and the inference guard agree:

* **Anchors** (`SubjectMatcher.anchors`): short byte strings that every written form of an identifier
  must contain once the text is lower-cased (ASCII). The corpus pre-filter looks only for these:
  the surname token (or the whole name forms when the surname is too short to be selective), the
  e-mail address, and for phones and other identifiers a separator-tolerant byte regex of their
  normalised digits/letters. Anchors over-approximate on purpose: a surname also hits the subject's
  namesakes; precision comes from the second layer.
* **Presidio recognizers** (`SubjectMatcher.recognizers`): `PatternRecognizer`s that confirm a
  candidate record on its decoded text, with word boundaries, and validate each match through
  `pii.normalize` (phone key = last 9 digits; identifiers = letters+digits). They report the entity
  types SUBJECT_NAME, SUBJECT_EMAIL, SUBJECT_PHONE and SUBJECT_IDENTIFIER, so their results can be
  told apart from the generic PII found in the same record.

Name forms matched: "Ada Quartermaine" (any case and spacing, an optional middle initial),
"Quartermaine, Ada", "Quartermaine Ada", "A. Quartermaine" / "A Quartermaine" and "Quartermaine, A."
where the initial must be an upper-case letter (so "a Quartermaine" as in "met a Quartermaine at the
fair" does not match). Accented names match with or without their accents. A first name alone never
matches; a one-token name matches nothing by name (a mononym cannot be told from a first name), only
through the subject's other identifiers.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import regex
from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from pii import normalize

MatchKind = Literal["name", "email", "phone", "identifier"]

SUBJECT_ENTITY_BY_KIND: dict[str, str] = {
    "name": "SUBJECT_NAME",
    "email": "SUBJECT_EMAIL",
    "phone": "SUBJECT_PHONE",
    "identifier": "SUBJECT_IDENTIFIER",
}
KIND_BY_SUBJECT_ENTITY = {v: k for k, v in SUBJECT_ENTITY_BY_KIND.items()}
# What a subject match is, in Presidio's vocabulary, when no generic recognizer typed the span.
GENERIC_ENTITY_BY_KIND: dict[str, str] = {
    "name": "PERSON",
    "email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER",
    "identifier": "SUBJECT_IDENTIFIER",
}

# A surname shorter than this is too common a substring ("li", "ng", "roe") to be the only anchor;
# the whole name forms are used instead.
MIN_SURNAME_ANCHOR = 4
# Other identifiers shorter than this (normalised) are not searched for: "12AB" would hit everywhere.
MIN_IDENTIFIER_CHARS = 5
# Separators allowed between the digits of a phone number and between the characters of an
# identifier, at most this many in a row: "(020) 7946-0018", "GB29 NWBK 6016", "123-45-6789".
_SEP_CLASS = r"[\s\-./()]"
_SEP_MAX = 3


@dataclass(frozen=True)
class SubjectIdentifiers:
    """What the data subject gave us. Strings as they wrote them; normalisation happens here.

    other_identifiers: passport, SSN, IBAN, card, licence, medical record numbers... compared on
    their letters and digits only.
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
            if "@" not in email or email.startswith("@") or email.endswith("@"):
                # The value itself is personal data: the message names the field, not the value.
                raise ValueError("SubjectIdentifiers.emails contains a value that is not an e-mail address")
        for phone in self.phones:
            if normalize.normalize_phone(phone) is None:
                raise ValueError(
                    f"SubjectIdentifiers.phones contains a value with fewer than {normalize.PHONE_MIN_DIGITS} digits"
                )
        if not self.searchable_kinds():
            raise ValueError(
                "SubjectIdentifiers needs a full name of at least two words, an e-mail, a phone or an identifier"
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


def _written_forms(token: str) -> set[str]:
    """Ways a name token appears in raw corpus bytes, lower-cased as the pre-filter lower-cases them.

    bytes.lower() only folds ASCII, so a non-ASCII capital ("É") stays as it is: we add the token in
    the cases people write names in. JSON writers escape non-ASCII ("\\u00e9") and legacy files use
    cp1252: both are added too. The accent-free form comes from `normalize.fold`.
    """
    forms: set[str] = set()
    for cased in {token.lower(), token.upper(), token.capitalize(), token.title()}:
        forms.add(cased)
        forms.add(json.dumps(cased)[1:-1])
    forms.add(normalize.fold(token))
    return forms


def _encodings(text: str) -> set[bytes]:
    out = {text.encode("utf-8").lower()}
    try:
        out.add(text.encode("cp1252").lower())
    except UnicodeEncodeError:
        pass
    return out


def _alternation(options: Iterable[str]) -> str:
    ordered = sorted(set(options), key=lambda s: (-len(s), s))
    return "(?:" + "|".join(re.escape(o) for o in ordered) + ")"


def _separated(chars: str) -> str:
    """Regex for `chars` in order with up to _SEP_MAX separators between each pair."""
    sep = f"{_SEP_CLASS}{{0,{_SEP_MAX}}}"
    return sep.join(re.escape(c) for c in chars)


class SubjectPatternRecognizer(PatternRecognizer):
    """A PatternRecognizer whose regex flags are its own, whatever the analyzer passes.

    The analyzer calls every recognizer with the registry's flags (IGNORECASE by default); the
    initial in "A. Quartermaine" must stay case-sensitive, so we pin the flags we compiled for. The
    validator, when given, checks each match through `pii.normalize` (the same rule as the guard).
    """

    def __init__(
        self,
        *,
        kind: str,
        patterns: list[Pattern],
        validator: Validator | None = None,
    ) -> None:
        super().__init__(
            supported_entity=SUBJECT_ENTITY_BY_KIND[kind],
            name=f"Subject{kind.capitalize()}Recognizer",
            patterns=patterns,
            global_regex_flags=regex.DOTALL | regex.MULTILINE,
        )
        self.kind = kind
        self._validator = validator
        self.quick_patterns = tuple(regex.compile(p.regex, self.global_regex_flags) for p in patterns)

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        return super().analyze(text, entities, nlp_artifacts, regex_flags=self.global_regex_flags)

    def validate_result(self, pattern_text: str) -> bool | None:
        if self._validator is None:
            return None
        return self._validator.accepts(pattern_text)


@dataclass(frozen=True)
class Validator:
    """Accepts a matched span when its normalised key is one of the subject's keys."""

    kind: Literal["phone", "identifier"]
    keys: frozenset[str]

    def accepts(self, span: str) -> bool:
        if self.kind == "phone":
            key = normalize.normalize_phone(span)
            return key is not None and key in self.keys
        return normalize.normalize_identifier(span) in self.keys


@dataclass(frozen=True)
class SubjectMatcher:
    """The anchors and recognizers of one subject (see module docstring)."""

    literal_anchors: dict[bytes, frozenset[str]]  # lower-cased bytes -> match kinds it may indicate
    regex_anchors: tuple[tuple[str, bytes], ...]  # (kind, bytes regex source) for digits/identifiers
    # The same digit/identifier keys as plain bytes (separators removed), for a pre-filter that
    # deletes separators from the text instead of allowing them in a regex.
    key_anchors: tuple[bytes, ...]
    recognizers: tuple[SubjectPatternRecognizer, ...]
    kinds: frozenset[str] = field(default_factory=frozenset)

    def match(self, text: str) -> list[tuple[str, int, int]]:
        """(kind, start, end) of every subject identifier found in `text`, in order."""
        found: list[tuple[str, int, int]] = []
        for recognizer in self.recognizers:
            # Most candidates are namesakes: one plain regex search rejects them before Presidio
            # builds its result and explanation objects (about 20x cheaper per rejected record).
            if not any(p.search(text) for p in recognizer.quick_patterns):
                continue
            for result in recognizer.analyze(text, [recognizer.supported_entities[0]]):
                found.append((recognizer.kind, result.start, result.end))
        return sorted(found, key=lambda item: (item[1], item[2], item[0]))


_WORD_BEFORE = r"(?<![\w@.+-])"
_WORD_AFTER = r"(?![\w@-])"


def _name_patterns(subject: SubjectIdentifiers) -> tuple[list[Pattern], set[bytes]]:
    raw_parts = subject.full_name.replace(",", " ").split()
    parts = subject.name_parts()
    if len(parts) < 2:
        return [], set()
    first_raw, last_raw = raw_parts[0], raw_parts[-1]

    def token_re(raw: str) -> str:
        return "(?i:" + _alternation({raw, normalize.fold(raw)}) + ")"

    first, last = token_re(first_raw), token_re(last_raw)
    initial_letters = {first_raw[0].upper(), normalize.fold(first_raw[0]).upper()}
    initial = "(?-i:" + _alternation(initial_letters) + ")"
    gap = r"\s+"
    middle = ""
    if len(raw_parts) > 2:
        middle = "(?:" + gap + gap.join(token_re(p) for p in raw_parts[1:-1]) + ")?"
    middle_initial = r"(?:\s+(?-i:[A-Z])\.?)?"
    forms = [
        first + middle + middle_initial + gap + last,  # Ada Quartermaine, ADA  QUARTERMAINE, Ada B. Quartermaine
        last + r"\s*,\s*" + first,  # Quartermaine, Ada
        last + gap + first,  # QUARTERMAINE Ada
        # A. Quartermaine, A Quartermaine; not the middle initial of someone else ("Paric D. Tercroft").
        r"(?<!\p{Lu}[\p{L}'-]*\s{1,3})" + initial + r"(?:\.\s*|\s+)" + last,
        last + r"\s*,\s*" + initial + r"\.?",  # Quartermaine, A.
    ]
    pattern = r"(?<!\w)(?:" + "|".join(f"(?:{f})" for f in forms) + ")" + r"(?!\w)"
    anchors: set[bytes] = set()
    surname_forms = _written_forms(last_raw)
    if len(normalize.fold(last_raw)) >= MIN_SURNAME_ANCHOR:
        for form in surname_forms:
            anchors |= _encodings(form)
    else:
        # Too short to be selective alone: anchor on "first last" / "last, first" / "last first".
        for f in _written_forms(first_raw):
            for s in surname_forms:
                for joined in (f"{f} {s}", f"{s}, {f}", f"{s} {f}", f"{s},{f}"):
                    anchors |= _encodings(joined)
        for s in surname_forms:
            anchors |= _encodings(f". {s}")  # "A. Li": initials are caught by the dotted form
    return [Pattern("subject name", pattern, 0.9)], anchors


def build_subject_matcher(subject: SubjectIdentifiers) -> SubjectMatcher:
    """Anchors and Presidio recognizers for one subject."""
    literal: dict[bytes, set[str]] = {}
    regex_anchors: list[tuple[str, bytes]] = []
    key_anchors: list[bytes] = []
    recognizers: list[SubjectPatternRecognizer] = []

    name_patterns, name_anchors = _name_patterns(subject)
    if name_patterns:
        recognizers.append(SubjectPatternRecognizer(kind="name", patterns=name_patterns))
        for anchor in name_anchors:
            literal.setdefault(anchor, set()).add("name")

    emails = sorted({normalize.normalize_email(e) for e in subject.emails})
    if emails:
        email_re = _WORD_BEFORE + "(?i:" + _alternation(emails) + ")" + r"(?![\w-]|\.\w)"
        recognizers.append(
            SubjectPatternRecognizer(kind="email", patterns=[Pattern("subject e-mail", email_re, 1.0)])
        )
        for email in emails:
            for encoded in _encodings(email):
                literal.setdefault(encoded, set()).add("email")

    phone_keys = sorted({k for k in (normalize.normalize_phone(p) for p in subject.phones) if k})
    if phone_keys:
        # The key is the *last* digits; the written number may carry a country code or trunk prefix
        # before it, which the span absorbs (two groups at most) so anonymisation removes it too.
        prefix = r"(?:\+?\(?\d{1,4}\)?" + f"{_SEP_CLASS}{{0,2}}" + "){0,2}"
        body = _alternation_regex(_separated(k) for k in phone_keys)
        phone_re = r"(?<![\w])" + prefix + body + r"(?!\d|[-.]\d)"
        recognizers.append(
            SubjectPatternRecognizer(
                kind="phone",
                patterns=[Pattern("subject phone", phone_re, 0.95)],
                validator=Validator("phone", frozenset(phone_keys)),
            )
        )
        for key in phone_keys:
            regex_anchors.append(("phone", _separated(key).encode() + rb"(?![0-9])"))
            key_anchors.append(key.encode())

    identifier_keys = sorted(
        {k for k in (normalize.normalize_identifier(v) for v in subject.other_identifiers) if len(k) >= MIN_IDENTIFIER_CHARS}
    )
    if identifier_keys:
        body = _alternation_regex(_separated(k) for k in identifier_keys)
        identifier_re = r"(?<![A-Za-z0-9])(?i:" + body + r")(?![A-Za-z0-9])"
        recognizers.append(
            SubjectPatternRecognizer(
                kind="identifier",
                patterns=[Pattern("subject identifier", identifier_re, 0.95)],
                validator=Validator("identifier", frozenset(identifier_keys)),
            )
        )
        for key in identifier_keys:
            # Start the anchor at the first digit: a leading letter ("n30106358", "gb29...") would
            # make the regex engine stop at every "n" or "g" of the corpus.
            digits_from = next((i for i, ch in enumerate(key) if ch.isdigit()), 0)
            anchor_key = key[digits_from:] if len(key) - digits_from >= MIN_IDENTIFIER_CHARS else key
            regex_anchors.append(("identifier", _separated(anchor_key).encode()))
            key_anchors.append(anchor_key.encode())

    return SubjectMatcher(
        literal_anchors={k: frozenset(v) for k, v in literal.items()},
        regex_anchors=tuple(regex_anchors),
        key_anchors=tuple(key_anchors),
        recognizers=tuple(recognizers),
        kinds=frozenset(subject.searchable_kinds()),
    )


def _alternation_regex(sources: Iterable[str]) -> str:
    return "(?:" + "|".join(f"(?:{s})" for s in sources) + ")"


def subject_recognizers(subject: SubjectIdentifiers) -> list[SubjectPatternRecognizer]:
    """The subject's Presidio recognizers, for `PiiAnalyzer.analyze(ad_hoc_recognizers=...)`."""
    return list(build_subject_matcher(subject).recognizers)


def match_kinds(matches: Sequence[tuple[str, int, int]]) -> tuple[str, ...]:
    return tuple(sorted({kind for kind, _, _ in matches}))
