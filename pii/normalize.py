"""Normalisation of personal identifiers, shared by the corpus scanner and the inference guard.

Both sides must normalise the same way: the scanner turns what the subject gave into search keys,
the guard turns what the subject gave into keyed hashes and, at inference time, turns candidate
spans of generated text into the same keys. A mismatch here is a missed erasure, so every rule is
in this one module.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import re
import unicodedata

# A phone number is compared on its last PHONE_KEY_DIGITS digits. International prefixes
# ("+44", "0044", "+1") and trunk zeros ("020 ...") vary between writings of the same number;
# the subscriber part at the end does not. Nine digits keep the chance collision between two
# random numbers at about 1 in 10^9 while surviving every prefix form seen in the UK/US/EU.
PHONE_KEY_DIGITS = 9
# Fewer digits than this is not a phone number (years, amounts, postcodes).
PHONE_MIN_DIGITS = 7

_SPACE_RE = re.compile(r"\s+")
_NON_ALNUM_RE = re.compile(r"[^0-9a-z]+")
_NON_DIGIT_RE = re.compile(r"\D+")


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})


def fold(text: str) -> str:
    """Case-fold, strip accents, unify apostrophes (O\u2019Brien = O'Brien) and collapse white space."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    without_marks = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACE_RE.sub(" ", without_marks.casefold()).strip()


def normalize_name(name: str) -> str:
    """'  Ada   QUARTERMAINE ' -> 'ada quartermaine'; punctuation other than letters is dropped."""
    folded = fold(name)
    return _SPACE_RE.sub(" ", re.sub(r"[^\w\s'-]", " ", folded)).strip()


def name_variants(full_name: str) -> set[str]:
    """Normalised written forms of a person's name.

    "Ada Quartermaine" gives {"ada quartermaine", "quartermaine ada" ("Quartermaine, Ada" once the
    comma is dropped), "a quartermaine" ("A. Quartermaine"), "a. quartermaine"}. Middle names give
    the first-last form too. A single-token name gives only itself: a first name alone is shared
    by too many people to identify anyone.
    """
    parts = normalize_name(full_name).replace(",", " ").split()
    if not parts:
        return set()
    if len(parts) == 1:
        return {parts[0]}
    first, last = parts[0], parts[-1]
    variants = {
        " ".join(parts),
        f"{first} {last}",
        f"{last} {first}",
        f"{first[0]} {last}",
        f"{first[0]}. {last}",
    }
    return {v for v in variants if v}


def normalize_email(email: str) -> str:
    """E-mail addresses are compared case-insensitively on the whole address."""
    return fold(email).strip(".,;:<>()[]\"'")


def phone_digits(phone: str) -> str:
    """All digits of a phone number, in order."""
    return _NON_DIGIT_RE.sub("", phone)


def normalize_phone(phone: str) -> str | None:
    """The comparison key of a phone number: its last PHONE_KEY_DIGITS digits, or None.

    "+44 20 7946 0018", "020-7946-0018" and "(020) 7946 0018" share the key "079460018".
    """
    digits = phone_digits(phone)
    if len(digits) < PHONE_MIN_DIGITS:
        return None
    return digits[-PHONE_KEY_DIGITS:]


def normalize_identifier(value: str) -> str:
    """Other identifiers (passport, SSN, IBAN, card, licence...) compare on letters and digits only.

    "GB29 NWBK 6016 1331 9268 19" and "gb29nwbk60161331926819" are the same account.
    """
    return _NON_ALNUM_RE.sub("", fold(value))
