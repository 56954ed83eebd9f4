"""Keys: the normalised forms of a data subject's identifiers that the matcher looks up.

Names give several forms ("ada quartermaine", "quartermaine ada", "a quartermaine", "quartermaine a",
and for a distinctive name "dr quartermaine"...); e-mails, phones and other identifiers one key each
(`pii.normalize`). Distinctive names (`is_distinctive_name`, a word-frequency rule) get keys of kind
"name_lc", matched in any case; other names keys of kind "name", matched when capitalised.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal, get_args

from pii.identifiers import MIN_IDENTIFIER_CHARS, SubjectIdentifiers
from pii.normalize import (
    PHONE_MIN_DIGITS,
    fold,
    name_variants,
    normalize_email,
    normalize_identifier,
    normalize_phone,
)
from pii.textnorm import fold_chars

Kind = Literal["name", "name_lc", "email", "phone", "identifier"]
KINDS: tuple[str, ...] = get_args(Kind)
# Longest identifier kept as one candidate (an IBAN is at most 34 characters).
MAX_IDENTIFIER_CHARS = 40
# Names are matched as n-grams of this many tokens at most ("Ada Mary Jane Quartermaine" is 4).
MAX_NAME_TOKENS = 4

# Lower-case words that never belong to a name; they break a run when names are matched in any
# case. Words that are also names in some language ("he", "do", "to", "an", "will", "may") are left
# out on purpose: capitalised forms are never filtered anyway.
_LOWER_STOPWORDS = frozenset(
    """a about above after again against all also am and any are as at be because been before being
    below between both but by could did does doing down during each few for from further had has have
    having her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should
    some such than that the their theirs them themselves then there these they this those through too
    under until up very was we were what when where which while who whom why with would you your yours
    yourself yourselves can phone number email address name card account called""".split()
)



# Typographic apostrophes count as plain ones; a possessive "'s" is not part of a name.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
_POSSESSIVE_RE = re.compile(r"'[sS]?(?![^\W\d_])")
_LETTERS_RE = re.compile(r"[^\W\d_]+")
# Titles written before a surname: "Dr Quartermaine" is the subject when the name is distinctive.
_TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "herr", "frau", "mme", "mlle", "sr", "sra")
_TITLE_SET = frozenset(_TITLES)

# The frequency rule for distinctive names (see `is_distinctive_name`), from the word frequencies of
# the `wordfreq` package (offline data, several sources of English text):
# - a token among the COMMON_WORDS most frequent English words is an ordinary word; lower-case runs
#   of text break at it when distinctive names are matched in any case, which is also what keeps
#   that mode cheap (most lower-case words of prose are common words);
# - a name is distinctive when neither its first nor its last token is common, both have at least
#   three letters, and the product of their frequencies is below DISTINCTIVE_MAX_PAIR_FREQUENCY:
#   the chance that the two words stand next to each other in text by accident.
COMMON_WORDS = 5000
DISTINCTIVE_MAX_PAIR_FREQUENCY = 1e-10


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The COMMON_WORDS most frequent English words, and the function words that never name anyone."""
    from wordfreq import top_n_list

    return frozenset(top_n_list("en", COMMON_WORDS)) | _LOWER_STOPWORDS


def _word_frequency(token: str) -> float:
    from wordfreq import word_frequency

    return float(word_frequency(token, "en"))


def name_tokens(text: str) -> list[str]:
    """Normalised name tokens: folded, possessives dropped, split at apostrophes and hyphens."""
    folded = fold_chars(text)
    return _LETTERS_RE.findall(fold(_POSSESSIVE_RE.sub(" ", folded.translate(_APOSTROPHES))))


def is_distinctive_name(full_name: str) -> bool:
    """True when the name may be matched in any case and after a title ("dr quartermaine").

    The frequency rule above: "Barbara Liskov" and "Ada Quartermaine" are distinctive; "Will Smith",
    "Maria Garcia" (common first name) and "Li Wu" (too short) are not, and are matched when
    capitalised only. Measured on clean text in tests/benchmarks/bench_guard.py.
    """
    tokens = name_tokens(full_name)
    if len(tokens) < 2:
        return False
    first, last = tokens[0], tokens[-1]
    if min(len(first), len(last)) < 3:
        return False
    common = common_words()
    if first in common or last in common:
        return False
    return _word_frequency(first) * _word_frequency(last) < DISTINCTIVE_MAX_PAIR_FREQUENCY


def name_keys(full_name: str) -> set[str]:
    """Every normalised written form of a name that is protected (two tokens or more).

    Built on pii.normalize.name_variants (full, "first last", "last, first", "f. last"), plus the
    initial or "last, first" with a multi-token surname ("C. O'Brien", "van Beethoven, Ludwig"),
    "last, f." and, for a distinctive name, a title before the surname ("Dr Quartermaine").
    """
    tokens = name_tokens(full_name)
    if len(tokens) < 2:
        return set()
    keys: set[str] = set()
    for variant in name_variants(" ".join(tokens)):
        variant_tokens = name_tokens(variant)
        if 2 <= len(variant_tokens) <= MAX_NAME_TOKENS:
            keys.add(" ".join(variant_tokens))
    rest = tokens[1:]
    for extra in ([tokens[0][0], *rest], [*rest, tokens[0]], tokens[:MAX_NAME_TOKENS], [tokens[-1], tokens[0][0]]):
        if 2 <= len(extra) <= MAX_NAME_TOKENS:
            keys.add(" ".join(extra))
    if is_distinctive_name(full_name):
        keys.update(f"{title} {tokens[-1]}" for title in _TITLES)
    return keys


def _email_key(value: str) -> str:
    return normalize_email(fold_chars(value))


def _phone_key(value: str) -> str | None:
    return normalize_phone(fold_chars(value))


def _identifier_key(value: str) -> str:
    return normalize_identifier(fold_chars(value))


def subject_keys(identifiers: SubjectIdentifiers) -> list[tuple[str, str]]:
    """(kind, normalised key) pairs for one subject: what an index is built from.

    Raises ValueError (naming the field, never its value) for an e-mail without '@', a phone with
    fewer than PHONE_MIN_DIGITS digits, or an identifier shorter than MIN_IDENTIFIER_CHARS: such a
    value would either match nothing or match ordinary text, and the officer should know. A name of
    one token gives no key: a single word is never matched (see the module notes). A distinctive
    name's keys are of kind "name_lc" (matched in any case), other names' of kind "name".
    """
    wanted: list[tuple[str, str]] = []
    name_kind = "name_lc" if is_distinctive_name(identifiers.full_name or "") else "name"
    for key in sorted(name_keys(identifiers.full_name or "")):
        wanted.append((name_kind, key))
    for i, email in enumerate(identifiers.emails):
        normalized = _email_key(email)
        if "@" not in normalized or normalized.startswith("@") or normalized.endswith("@"):
            raise ValueError(f"emails[{i}] is not an e-mail address")
        wanted.append(("email", normalized))
    for i, phone in enumerate(identifiers.phones):
        phone_key = _phone_key(phone)
        if phone_key is None:
            raise ValueError(f"phones[{i}] has fewer than {PHONE_MIN_DIGITS} digits")
        wanted.append(("phone", phone_key))
    for i, other in enumerate(identifiers.other_identifiers):
        normalized = _identifier_key(other)
        if not MIN_IDENTIFIER_CHARS <= len(normalized) <= MAX_IDENTIFIER_CHARS:
            raise ValueError(
                f"other_identifiers[{i}] must have {MIN_IDENTIFIER_CHARS} to {MAX_IDENTIFIER_CHARS} letters or digits"
            )
        wanted.append(("identifier", normalized))
    return list(dict.fromkeys(wanted))



def keys_field_by_field(identifiers: SubjectIdentifiers) -> list[tuple[str, str]]:
    """subject_keys, skipping (not refusing) a value that cannot be matched safely."""
    keys: list[tuple[str, str]] = []
    for part in identifiers.single_fields():
        try:
            keys.extend(subject_keys(part))
        except ValueError:
            continue
    return keys


