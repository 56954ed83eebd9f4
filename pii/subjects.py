"""Pre-filter anchors for one data subject, built from the identifiers they gave.

The corpus scan reads every byte of a corpus, so it first looks for *anchors*: short byte strings
that every written form of a subject's identifier contains once the text is lower-cased and its
characters folded (`pii.textnorm`): the surname token (or the whole name forms when the surname is
too short to be selective), the e-mail address and the longest token of its local part (for
"ada at example dot com"), and for phones and other identifiers a separator-tolerant byte regex of
their normalised digits/letters. Anchors over-approximate on purpose: a surname also hits the
subject's namesakes. Whether a candidate record really holds the subject's identifier is decided by
the one matcher (`pii.matcher`), the same that the inference guard uses.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

from pii import normalize
from pii.identifiers import MIN_IDENTIFIER_CHARS, SubjectIdentifiers
from pii.textnorm import fold_chars

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
# The local part of an e-mail is an anchor of its own (for "ada at example dot com") when its
# longest token has at least this many characters.
MIN_LOCAL_ANCHOR = 4
# Separators allowed between the digits of a phone number and between the characters of an
# identifier, at most this many in a row: "(020) 7946-0018", "GB29 NWBK 6016", "123-45-6789".
_SEP_CLASS = r"[\s\-./()]"
_SEP_MAX = 3

__all__ = ["SubjectAnchors", "SubjectIdentifiers", "build_subject_anchors"]


def _written_forms(token: str) -> set[str]:
    """Ways a name token appears in raw corpus bytes, lower-cased as the pre-filter lower-cases them.

    bytes.lower() only folds ASCII, so a non-ASCII capital ("É") stays as it is: we add the token in
    the cases people write names in. JSON writers escape non-ASCII ("\\u00e9") and legacy files use
    cp1252: both are added too. The folded form ("Ørsted" -> "orsted") is what the pre-filter sees
    in a block it has folded (`pii.textnorm.fold_chars`).
    """
    forms: set[str] = set()
    for cased in {token.lower(), token.upper(), token.capitalize(), token.title()}:
        forms.add(cased)
        forms.add(json.dumps(cased)[1:-1])
    forms.add(normalize.fold(token))
    forms.add(normalize.fold(fold_chars(token)))
    return forms


def _encodings(text: str) -> set[bytes]:
    out = {text.encode("utf-8").lower()}
    try:
        out.add(text.encode("cp1252").lower())
    except UnicodeEncodeError:
        pass
    return out


def _separated(chars: str) -> str:
    """Regex for `chars` in order with up to _SEP_MAX separators between each pair."""
    sep = f"{_SEP_CLASS}{{0,{_SEP_MAX}}}"
    return sep.join(re.escape(c) for c in chars)


@dataclass(frozen=True)
class SubjectAnchors:
    """The pre-filter's anchors for one subject (see the module docstring)."""

    literal_anchors: dict[bytes, frozenset[str]]  # lower-cased bytes -> match kinds it may indicate
    regex_anchors: tuple[tuple[str, bytes], ...]  # (kind, bytes regex source) for digits/identifiers
    # The same digit/identifier keys as plain bytes (separators removed), for a pre-filter that
    # deletes separators from the text instead of allowing them in a regex.
    key_anchors: tuple[bytes, ...]
    kinds: frozenset[str] = field(default_factory=frozenset)


def _name_anchors(subject: SubjectIdentifiers) -> set[bytes]:
    raw_parts = subject.full_name.replace(",", " ").split()
    if len(subject.name_parts()) < 2:
        return set()
    first_raw, last_raw = raw_parts[0], raw_parts[-1]
    anchors: set[bytes] = set()
    surname_forms = _written_forms(last_raw)
    if len(normalize.fold(fold_chars(last_raw))) >= MIN_SURNAME_ANCHOR:
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
    return anchors


def _local_part_anchor(email: str) -> str | None:
    local = email.split("@", 1)[0]
    tokens = [t for t in re.split(r"[^a-z0-9]+", local) if t]
    longest = max(tokens, key=len, default="")
    return longest if len(longest) >= MIN_LOCAL_ANCHOR else None


def build_subject_anchors(subject: SubjectIdentifiers) -> SubjectAnchors:
    """The pre-filter anchors of one subject."""
    literal: dict[bytes, set[str]] = {}
    regex_anchors: list[tuple[str, bytes]] = []
    key_anchors: list[bytes] = []

    for anchor in _name_anchors(subject):
        literal.setdefault(anchor, set()).add("name")

    emails = sorted({normalize.normalize_email(fold_chars(e)) for e in subject.emails})
    for email in emails:
        for encoded in _encodings(email):
            literal.setdefault(encoded, set()).add("email")
        local = _local_part_anchor(email)
        if local is not None:
            literal.setdefault(local.encode(), set()).add("email")

    phone_keys = sorted({k for k in (normalize.normalize_phone(fold_chars(p)) for p in subject.phones) if k})
    for key in phone_keys:
        regex_anchors.append(("phone", _separated(key).encode() + rb"(?![0-9])"))
        key_anchors.append(key.encode())

    identifier_keys = sorted(
        {
            k
            for k in (normalize.normalize_identifier(fold_chars(v)) for v in subject.other_identifiers)
            if len(k) >= MIN_IDENTIFIER_CHARS
        }
    )
    for key in identifier_keys:
        # Start the anchor at the first digit: a leading letter ("n30106358", "gb29...") would
        # make the regex engine stop at every "n" or "g" of the corpus.
        digits_from = next((i for i, ch in enumerate(key) if ch.isdigit()), 0)
        anchor_key = key[digits_from:] if len(key) - digits_from >= MIN_IDENTIFIER_CHARS else key
        regex_anchors.append(("identifier", _separated(anchor_key).encode()))
        key_anchors.append(anchor_key.encode())

    return SubjectAnchors(
        literal_anchors={k: frozenset(v) for k, v in literal.items()},
        regex_anchors=tuple(regex_anchors),
        key_anchors=tuple(key_anchors),
        kinds=frozenset(subject.searchable_kinds()),
    )
