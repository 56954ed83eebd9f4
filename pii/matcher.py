"""The identifier matcher: is this span of text one of a data subject's identifiers?

One matcher for the corpus scan (`pii.scan`, confirming candidate records), the anonymiser and the
inference guard (`pii.guard`, filtering model outputs). It works in three steps:

1. **Normalise** (`pii.textnorm`): Unicode compatibility forms, invisible characters, dash and
   space classes, diacritics, look-alike letters, spelled-out digits and "at"/"dot" e-mails are
   rewritten into one canonical text, with an offset map back to the original characters.
2. **Find candidates** in the normalised text: e-mail-like spans around each "@", digit regions
   (phones and identifiers written with separators), and runs of name-like words.
3. **Look each candidate's key up** in an index: `PlainIndex` (keys in memory, for the scan of a
   corpus) or `GuardIndex` (keyed HMAC-SHA256 digests, so that the guard holds no plaintext). A hit
   becomes a `Match` with positions in the *original* text, its kind and the subject's reference.

    index = GuardIndex.build([(ref, r.kind, r.digest_hex) for r in rule_hashes(ids, key)], key)
    find_matches("Call Ada Quartermaine on +44 20 7946\u20130018.", index)   # two matches

Design notes (why it is shaped like this):
- One keyed hash costs about a microsecond, so the candidate count per kilobyte, not the rule count,
  sets the cost. Lookup is one dict probe per candidate: 10 rules or 100,000 cost the same, and
  one index holds every subject of a batch, so a corpus is read once for a hundred requests.
- A single word never matches: name keys have two tokens or more, so a person who shares only a
  first name (or only a surname) with a subject is never flagged.
- Names are matched in three modes (`MatchOptions.names`): "capitalised" runs only; "distinctive"
  (the default) adds any-case matching for names whose rule is of kind "name_lc", which
  `name_keys` gives only to distinctive names (`is_distinctive_name`); "any_case" matches every name
  in any case (the corpus scan: records are often lower- or upper-cased).
- The HMAC message is versioned and carries the kind ("guard-v1", kind, value), so a phone key and an
  SSN with the same digits hash differently.

Pure: no Django, no environment reads. Safe to import in a serving process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol, get_args

import re2

from pii.identifiers import MIN_IDENTIFIER_CHARS, SubjectIdentifiers
from pii.normalize import (
    PHONE_MIN_DIGITS,
    fold,
    name_variants,
    normalize_email,
    normalize_identifier,
    normalize_phone,
)
from pii.textnorm import DEFAULT_TRANSFORMS, Normalized, fold_chars, normalize, validate_transforms

Kind = Literal["name", "name_lc", "email", "phone", "identifier"]
KINDS: tuple[str, ...] = get_args(Kind)
NameMode = Literal["capitalised", "distinctive", "any_case"]
NAME_MODES: tuple[str, ...] = get_args(NameMode)

# The HMAC message is b"guard-v1" US kind US value. Changing it invalidates every stored rule.
_MESSAGE_PREFIX = "guard-v1\x1f"
# Shorter keys make the digests guessable by brute force over the (small) space of identifiers.
MIN_KEY_BYTES = 16
# Candidates remembered as misses per GuardIndex (about 100 bytes each).
MISS_CACHE_SIZE = 200_000
# Longest identifier kept as one candidate (an IBAN is at most 34 characters).
MAX_IDENTIFIER_CHARS = 40
# Names are matched as n-grams of this many tokens at most ("Ada Mary Jane Quartermaine" is 4).
MAX_NAME_TOKENS = 4
# An identifier is at most this many chunks (an IBAN in groups of four is 9 with a word before it).
_MAX_ID_CHUNKS = 10
# A digit group longer than any E.164 number (15 digits) may hide a phone glued to other digits.
_LONG_DIGIT_GROUP = 15


# --------------------------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchOptions:
    """How text is read. transforms: `pii.textnorm.TRANSFORMS` names (the policy's switches)."""

    transforms: frozenset[str] = DEFAULT_TRANSFORMS
    names: NameMode = "distinctive"
    # "Paric D. Tercroft": is "D. Tercroft" (the initial form of Dolan Tercroft) found inside another
    # capitalised name? The guard says yes (a redaction too many is safe); the scan says no (a record
    # of someone else must not be erased), at the price of "Dear D. Tercroft" needing another form.
    strict_initials: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", validate_transforms(self.transforms))
        if self.names not in NAME_MODES:
            raise ValueError(f"names must be one of {NAME_MODES}")


DEFAULT_OPTIONS = MatchOptions()
# How the corpus scan and the anonymiser read records: names in any case, initials strictly.
SCAN_OPTIONS = MatchOptions(names="any_case", strict_initials=True)


@dataclass(frozen=True)
class Match:
    """A protected span of the text. Never carries the matched characters."""

    start: int
    end: int
    kind: str
    subject_ref: str


# --------------------------------------------------------------------------------------------
# Keys: the normalised forms of a subject's identifiers
# --------------------------------------------------------------------------------------------

# Typographic apostrophes count as plain ones; a possessive "'s" is not part of a name.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
_POSSESSIVE_RE = re.compile(r"'[sS]?(?![^\W\d_])")
_LETTERS_RE = re.compile(r"[^\W\d_]+")
# Within a run: a token is letters (combining marks allowed, for text that is not NFC).
_TOKEN_RE = re.compile(r"[^\W\d_](?:[^\W\d_]|[\u0300-\u036f])*")
# The lower-case pass of "distinctive" mode: words, and what may stand between two words of a name.
_WORD_RE = re.compile(r"[^\W\d_]+")
_NAME_GAP_RE = re.compile(r"[ \t\u00a0]{0,2}[,.]?[ \t\u00a0\n]{0,2}|['\u2019-]")
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


# --------------------------------------------------------------------------------------------
# Indexes
# --------------------------------------------------------------------------------------------


class KeyIndex(Protocol):
    """What the finders ask: which subjects have this (kind, normalised key)?"""

    def lookup(self, kind: str, normalized: str) -> tuple[str, ...]: ...
    def has_kind(self, kind: str) -> bool: ...
    @property
    def rule_count(self) -> int: ...


class PlainIndex:
    """Keys in memory (the scan of a corpus and the anonymiser; never stored). Immutable once built."""

    __slots__ = ("_lookup", "_kinds", "_name_hint", "_digit_hint", "name_vocabulary", "rule_count", "subject_count")

    def __init__(self, lookup: dict[tuple[str, str], tuple[str, ...]]) -> None:
        self._lookup = lookup
        self._kinds = frozenset(kind for kind, _ in lookup)
        # Every token of every name key: a name n-gram whose first or last token is not one of them
        # cannot be a key, so the finder skips it without building it (most words of a record).
        self.name_vocabulary: frozenset[str] | None = frozenset(
            token for kind, key in lookup if kind in ("name", "name_lc") for token in key.split()
        )
        self.rule_count = len(lookup)
        self.subject_count = len({ref for refs in lookup.values() for ref in refs})
        # Cheap RE2 tests of a whole (ASCII) text before the finders run: does any name key appear,
        # in any case, with any separators and an optional middle initial? Does any phone or
        # identifier key appear once separators are deleted? Most candidate records of a corpus
        # scan are namesakes, and most of their words and digits are nobody's key.
        names = sorted({key for kind, key in lookup if kind in ("name", "name_lc")})
        gap = r"[\s,.'\-]+(?:[a-z][\s,.'\-]+)?"
        self._name_hint = _re2("|".join(gap.join(re.escape(t) for t in key.split()) for key in names)) if names else None
        digits = sorted({key for kind, key in lookup if kind in ("phone", "identifier")})
        self._digit_hint = _re2("|".join(re.escape(k) for k in digits)) if digits else None

    def may_hold_names(self, text: str) -> bool:
        return self._name_hint is not None and (not text.isascii() or self._name_hint.search(text.lower()) is not None)

    def may_hold_digits(self, text: str) -> bool:
        if self._digit_hint is None:
            return False
        return not text.isascii() or self._digit_hint.search(text.lower().translate(_DIGIT_HINT_DELETE)) is not None

    @classmethod
    def build(cls, subjects: Iterable[tuple[str, SubjectIdentifiers]], *, strict: bool = False) -> PlainIndex:
        """subjects: (subject_ref, identifiers). strict=False skips unusable values field by field."""
        grouped: dict[tuple[str, str], list[str]] = {}
        for ref, identifiers in subjects:
            for kind, key in _keys_field_by_field(identifiers) if not strict else subject_keys(identifiers):
                refs = grouped.setdefault((kind, key), [])
                if ref not in refs:
                    refs.append(ref)
        return cls({k: tuple(v) for k, v in grouped.items()})

    def lookup(self, kind: str, normalized: str) -> tuple[str, ...]:
        return self._lookup.get((kind, normalized), ())

    def has_kind(self, kind: str) -> bool:
        return kind in self._kinds

    def __repr__(self) -> str:
        return f"PlainIndex(keys={self.rule_count}, subjects={self.subject_count})"


def _re2(pattern: str) -> re2._Regexp:
    options = re2.Options()
    options.max_mem = 256 << 20  # the DFA of a few hundred subjects' keys needs tens of MB
    return re2.compile(pattern, options)


# Characters the digit hint deletes before looking for phone and identifier keys (the separators
# that the digit-region finder allows inside a written number).
_DIGIT_HINT_DELETE = str.maketrans("", "", " \t.-()/\u00a0")


def _keys_field_by_field(identifiers: SubjectIdentifiers) -> list[tuple[str, str]]:
    """subject_keys, skipping (not refusing) a value that cannot be matched safely."""
    keys: list[tuple[str, str]] = []
    parts = [SubjectIdentifiers(full_name=identifiers.full_name)]
    parts += [SubjectIdentifiers(emails=(e,)) for e in identifiers.emails]
    parts += [SubjectIdentifiers(phones=(p,)) for p in identifiers.phones]
    parts += [SubjectIdentifiers(other_identifiers=(o,)) for o in identifiers.other_identifiers]
    for part in parts:
        try:
            keys.extend(subject_keys(part))
        except ValueError:
            continue
    return keys


_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _KeyedHasher:
    """HMAC-SHA256 with the key schedule and the message prefix of each kind hashed once (RFC 2104).

    The padded-key states are copied per message; they are never updated in place, so one instance
    is safe to share between threads.
    """

    __slots__ = ("_inner_by_kind", "_outer")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the guard key must be at least {MIN_KEY_BYTES} bytes")
        key = bytes(key)
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        inner = hashlib.sha256(key.translate(_IPAD))
        self._inner_by_kind = {}
        for kind in KINDS:
            state = inner.copy()
            state.update(f"{_MESSAGE_PREFIX}{kind}\x1f".encode())
            self._inner_by_kind[kind] = state
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, kind: str, normalized: str) -> bytes:
        inner = self._inner_by_kind[kind].copy()
        inner.update(normalized.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return "_KeyedHasher(<key hidden>)"


def keyed_digest(kind: str, normalized: str, key: bytes) -> str:
    """The hex digest stored for one normalised value (exposed for tests and re-keying tools)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return _KeyedHasher(key).digest(kind, normalized).hex()


@dataclass(frozen=True)
class RuleHash:
    """One stored suppression rule, minus the subject_ref the caller attaches."""

    kind: str
    digest_hex: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not _HEX64_RE.fullmatch(self.digest_hex):
            raise ValueError("digest_hex must be 64 lower-case hex characters")


def rule_hashes(identifiers: SubjectIdentifiers, key: bytes) -> list[RuleHash]:
    """The suppression rules for one subject: exactly what the database stores (with subject_ref).

    Raises ValueError as `subject_keys` does (the message names the field, never its value).
    """
    hasher = _KeyedHasher(key)
    out: list[RuleHash] = []
    seen: set[tuple[str, str]] = set()
    for kind, normalized in subject_keys(identifiers):
        digest_hex = hasher.digest(kind, normalized).hex()
        if (kind, digest_hex) not in seen:
            seen.add((kind, digest_hex))
            out.append(RuleHash(kind=kind, digest_hex=digest_hex))
    return out


class GuardIndex:
    """Digest -> subject_refs lookup plus the keyed hasher. Immutable once built.

    Build a new one when rules change and swap the reference (pii.guard.GuardCache does this);
    readers holding the old one keep a consistent view.
    """

    __slots__ = ("_hasher", "_lookup", "_kinds", "_misses", "rule_count", "subject_count")

    def __init__(self, hasher: _KeyedHasher, lookup: dict[bytes, tuple[str, ...]], kinds: frozenset[str], rule_count: int) -> None:
        self._hasher = hasher
        self._lookup = lookup
        self._kinds = kinds
        # Candidates that matched no rule ("thank you", "the Board"), so that the keyed hash of a
        # phrase that recurs in outputs is computed once per index. Only misses are kept: a value
        # that is protected never enters it, so the guard still holds no protected plaintext.
        # Bounded: cleared when full. A new index (rules changed) starts empty.
        self._misses: dict[tuple[str, str], None] = {}
        self.rule_count = rule_count
        self.subject_count = len({ref for refs in lookup.values() for ref in refs})

    @classmethod
    def build(cls, rules: Iterable[tuple[str, str, str]], key: bytes) -> GuardIndex:
        """rules: (subject_ref, kind, digest_hex) triples, as stored."""
        hasher = _KeyedHasher(key)
        grouped: dict[bytes, list[str]] = {}
        kinds: set[str] = set()
        count = 0
        for subject_ref, kind, digest_hex in rules:
            if kind not in KINDS:
                raise ValueError(f"rule {count}: kind must be one of {KINDS}")
            if not isinstance(subject_ref, str) or not subject_ref:
                raise ValueError(f"rule {count}: subject_ref must be a non-empty string")
            digest_hex = digest_hex.lower()
            if not _HEX64_RE.fullmatch(digest_hex):
                raise ValueError(f"rule {count}: digest must be 64 hex characters")
            refs = grouped.setdefault(bytes.fromhex(digest_hex), [])
            if subject_ref not in refs:
                refs.append(subject_ref)
            kinds.add(kind)
            count += 1
        lookup = {digest: tuple(refs) for digest, refs in grouped.items()}
        return cls(hasher, lookup, frozenset(kinds), count)

    @classmethod
    def empty(cls, key: bytes) -> GuardIndex:
        return cls.build((), key)

    def lookup(self, kind: str, normalized: str) -> tuple[str, ...]:
        """subject_refs whose rule matches this normalised value (empty tuple when none)."""
        misses = self._misses
        if (kind, normalized) in misses:
            return ()
        found = self._lookup.get(self._hasher.digest(kind, normalized), ())
        if not found:
            if len(misses) >= MISS_CACHE_SIZE:
                misses.clear()
            misses[(kind, normalized)] = None
        return found

    def has_kind(self, kind: str) -> bool:
        return kind in self._kinds

    def __len__(self) -> int:
        return self.rule_count

    def __repr__(self) -> str:
        return f"GuardIndex(rules={self.rule_count}, subjects={self.subject_count})"


# --------------------------------------------------------------------------------------------
# Candidate finders
# --------------------------------------------------------------------------------------------

# Every upper-case letter of the Basic Multilingual Plane (so "Élodie Ørsted" starts a name run).
_UPPER_CHARS = "".join(chr(c) for c in range(0x10000) if chr(c).isupper() and chr(c).isalpha())
# Surname particles written in lower case inside a capitalised name ("Ludwig van Beethoven").
_PARTICLES = r"(?:van|von|der|den|de|del|della|di|da|du|le|la|dos|das|bin|ibn|al|el|ter|ten|zu|y)"
_PARTICLE_SET = frozenset(_PARTICLES[3:-1].split("|"))
# Between two name tokens: spaces, or a comma or full stop with optional spaces ("Last, First",
# "A. Last", "A.Last"). Nothing else (a colon, a bracket, a digit) continues a name.
_SEP = r"(?:[ \t\u00a0]*[,.][ \t\u00a0\n]*|[ \t\u00a0\n]+)"


def _name_run_re(upper: str, letter: str, lowercase: bool) -> re.Pattern[str]:
    # Every pattern starts with a character class, so the regex engine skips ahead in C to the
    # next possible start instead of trying a match at every position (5-10x faster here).
    if lowercase:
        token = rf"{letter}+(?:['\u2019-]{letter}+)*"
        return re.compile(rf"{token}(?:{_SEP}{token})+")
    token = rf"{upper}{letter}*(?:['\u2019-]{letter}+)*"
    return re.compile(rf"{token}(?:{_SEP}(?:{_PARTICLES}[ \t\u00a0]+)*{token})+")


_NAME_PAIR_RES = {
    True: re.compile(rf"[A-Z][A-Za-z'\u2019-]*[\s,.]+(?:{_PARTICLES} +)*[A-Z]"),
    False: re.compile(rf"[{re.escape(_UPPER_CHARS)}](?:[^\W\d_]|['\u2019-])*[\s,.]+(?:{_PARTICLES} +)*[{re.escape(_UPPER_CHARS)}]"),
}
# Texts that are pure ASCII (most model outputs) use the ASCII classes, which match faster.
_NAME_RUN_RES = {
    (True, False): _name_run_re("[A-Z]", "[A-Za-z]", lowercase=False),
    (True, True): _name_run_re("[A-Z]", "[A-Za-z]", lowercase=True),
    (False, False): _name_run_re("[" + re.escape(_UPPER_CHARS) + "]", r"[^\W\d_]", lowercase=False),
    (False, True): _name_run_re("[" + re.escape(_UPPER_CHARS) + "]", r"[^\W\d_]", lowercase=True),
}
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

# E-mails are found from each "@": the local part is matched backwards from it, the domain forwards.
_EMAIL_LOCAL_RE = re.compile(r"[A-Za-z0-9._%+\-]+\Z")
_EMAIL_DOMAIN_RE = re.compile(r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_EMAIL_MAX_LOCAL = 64  # RFC 5321 limit on the local part
_EMAIL_LIKE_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# Digit regions: chunks with a digit joined by one to three separator characters; a short
# all-letter chunk may sit between two digit chunks ("GB29 NWBK 6016") or trail ("AB 12 34 56 C").
# One scan finds every region; phones and identifiers are then read inside each region. Letters
# glued before the first digit ("K12345678") and one short leading chunk ("MRN-1234567") are added
# by _Finder.digit_regions, so that the pattern can start with \d (the engine then skips in C to
# the next digit instead of trying a match at every position).
_DIGIT_REGION_RE = re.compile(
    r"\d[A-Za-z\d]*(?:[ \t.\-()/\u00a0]{1,3}(?:[A-Za-z]{1,5}[ \-./\u00a0])?[A-Za-z]*\d[A-Za-z\d]*)*"
    r"(?:[ \-./\u00a0][A-Za-z](?![A-Za-z\d]))?"
)
# Inside a region: digits with up to three separator characters between them.
_PHONE_RUN_RE = re.compile(r"\d(?:[ \t.\-()/\u00a0]{0,3}\d)*")
_DIGIT_GROUP_RE = re.compile(r"\d+")
_ID_SEP_CHARS = " -./\u00a0"
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM_RE = re.compile(r"[A-Za-z0-9]+")


def _fold_token(token: str) -> str:
    if token.isascii():
        return token.lower()  # casefold == lower on ASCII, and there is nothing to strip
    return fold(token)


class _Finder:
    """Collects matches in one (normalised) text; a repeated candidate is looked up once."""

    __slots__ = ("index", "matches", "strict_initials", "_seen")

    def __init__(self, index: KeyIndex, strict_initials: bool = False) -> None:
        self.index = index
        self.strict_initials = strict_initials
        self.matches: list[Match] = []
        self._seen: dict[tuple[str, str], tuple[str, ...]] = {}

    def refs(self, kind: str, normalized: str) -> tuple[str, ...]:
        cache_key = (kind, normalized)
        found = self._seen.get(cache_key)
        if found is None:
            found = self.index.lookup(kind, normalized)
            self._seen[cache_key] = found
        return found

    def check(self, kind: str, normalized: str, start: int, end: int) -> bool:
        found = self.refs(kind, normalized)
        reported = "name" if kind == "name_lc" else kind
        for ref in found:
            self.matches.append(Match(start=start, end=end, kind=reported, subject_ref=ref))
        return bool(found)

    # -- e-mails ------------------------------------------------------------------------------
    def emails(self, text: str) -> None:
        at = text.find("@")
        while at != -1:
            local = _EMAIL_LOCAL_RE.search(text, max(0, at - _EMAIL_MAX_LOCAL), at)
            domain = _EMAIL_DOMAIN_RE.match(text, at + 1)
            if local is not None and domain is not None:
                start, end = local.start(), domain.end()
                self.check("email", normalize_email(text[start:end]), start, end)
            at = text.find("@", at + 1)

    # -- phones -------------------------------------------------------------------------------
    def digit_regions(self, text: str, phones: bool, identifiers: bool) -> None:
        for m in _DIGIT_REGION_RE.finditer(text):
            start, end = m.start(), m.end()
            if identifiers:
                start = self._widen_identifier(text, start)
                if end - start >= MIN_IDENTIFIER_CHARS:
                    self.identifiers(text, start, end)
            if phones and end - m.start() >= PHONE_MIN_DIGITS:
                self.phones(text, m.start(), end)

    def phones(self, text: str, start: int, end: int) -> None:
        for m in _PHONE_RUN_RE.finditer(text, start, end):
            run = m.group()
            groups = [(g.start(), g.end()) for g in _DIGIT_GROUP_RE.finditer(run)]
            digits = "".join(run[a:b] for a, b in groups)
            if len(digits) < PHONE_MIN_DIGITS:
                continue
            self._phone_windows(m.start(), groups, digits, text)

    def _phone_windows(self, base: int, groups: list[tuple[int, int]], digits: str, text: str) -> None:
        # Offsets of each digit group within `digits`. A written phone number ends where a group
        # ends, so keys are the last 9 digits before each group end (the whole run is the last
        # one) and, for 7-8 digit numbers, the digits between two group boundaries. Runs holding
        # several numbers ("call 202 555 0143 or 202 555 0199") are thereby covered too.
        bounds: list[int] = []
        total = 0
        for a, b in groups:
            bounds.append(total)
            total += b - a
        ends = [*bounds[1:], total]
        windows: set[tuple[int, int]] = set()
        for e in ends:
            if e >= 9:
                windows.add((e - 9, e))
            for s in bounds:
                if PHONE_MIN_DIGITS <= e - s < 9:
                    windows.add((s, e))
        for (a, b), s in zip(groups, bounds, strict=True):
            if b - a > _LONG_DIGIT_GROUP:  # a phone glued to other digits: slide over the group
                windows.update((s + i, s + i + 9) for i in range(b - a - 8))
        for s, e in windows:
            found = self.refs("phone", digits[s:e])
            if found:  # the span is only worked out for a hit
                start, end = self._phone_span(base, groups, bounds, s, e)
                if start == base:
                    start = self._widen(text, start, end)
                self.matches.extend(Match(start=start, end=end, kind="phone", subject_ref=ref) for ref in found)

    @staticmethod
    def _phone_span(
        base: int, groups: list[tuple[int, int]], bounds: list[int], s: int, e: int
    ) -> tuple[int, int]:
        # Span in the text of digits [s, e): from the start of the group holding digit s (from
        # the start of the run when only a short prefix such as "+1" or "00 44" precedes it) to
        # the end of the group holding digit e - 1.
        first = max(i for i, b in enumerate(bounds) if b <= s)
        last = max(i for i, b in enumerate(bounds) if b <= e - 1)
        start = base + groups[first][0]
        if s <= 4:
            start = base
        return start, base + groups[last][1]

    @staticmethod
    def _widen(text: str, start: int, end: int) -> int:
        # A "+" right before a phone belongs to it ("+1 202..."), and so does a "(" closed inside
        # it ("(202) 555-0143"); a bracket around the whole number ("(020 7946 0018)") does not.
        if start > 0 and text[start - 1] == "(" and ")" in text[start:end]:
            start -= 1
        if start > 0 and text[start - 1] == "+":
            start -= 1
        return start

    # -- identifiers --------------------------------------------------------------------------
    @staticmethod
    def _widen_identifier(text: str, start: int) -> int:
        while start > 0 and text[start - 1] in _ASCII_LETTERS:  # "K12345678", "GB29", "QUART12..."
            start -= 1
        if start >= 2 and text[start - 1] in _ID_SEP_CHARS:  # one short leading chunk: "MRN-1234567"
            prefix = start - 1
            while prefix > 0 and start - 1 - prefix < 5 and text[prefix - 1] in _ASCII_LETTERS:
                prefix -= 1
            if prefix < start - 1 and (prefix == 0 or not text[prefix - 1].isalnum()):
                start = prefix
        return start

    def identifiers(self, text: str, start: int, end: int) -> None:
        # A written identifier is the whole region, grouped or not, possibly with one word glued
        # before it ("IBAN GB29 NWBK ...", "card 4111 1111 ...") or one chunk after it ("... 19 C").
        # So candidates start at chunk 0 or 1 and end at the last or last-but-one chunk: at most
        # four keyed hashes per region, where all sub-runs would cost O(chunks^2).
        chunks = [(c.start(), c.end(), c.group().lower()) for c in _ALNUM_RE.finditer(text, start, end)]
        n = len(chunks)
        for i in range(min(2, n)):
            for j in range(max(i, n - 2), n):
                if j - i >= _MAX_ID_CHUNKS:
                    continue
                joined = "".join(chunk[2] for chunk in chunks[i : j + 1])
                if MIN_IDENTIFIER_CHARS <= len(joined) <= MAX_IDENTIFIER_CHARS:
                    self.check("identifier", joined, chunks[i][0], chunks[j][1])

    # -- names --------------------------------------------------------------------------------
    def names(self, text: str, mode: NameMode) -> None:
        has_plain, has_lc = self.index.has_kind("name"), self.index.has_kind("name_lc")
        if mode == "distinctive":
            # Every name when capitalised; distinctive names ("name_lc" rules) in any case, found by
            # a lighter pass over the words that are not common (`_lower_case_names`).
            self._name_runs(text, "capitalised", has_plain, has_lc)
            if has_lc:
                self._lower_case_names(text)
            return
        self._name_runs(text, mode, has_plain, has_lc)

    def _name_runs(self, text: str, mode: NameMode, has_plain: bool, has_lc: bool) -> None:
        vocabulary = getattr(self.index, "name_vocabulary", None)
        any_case = mode == "any_case"
        ascii_text = text.isascii()
        run_re = _NAME_RUN_RES[(ascii_text, any_case)]
        runs = run_re.finditer(text) if any_case else self._capitalised_runs(text, ascii_text, run_re)
        for m in runs:
            run = m.group().translate(_APOSTROPHES)
            base = m.start()
            tokens: list[tuple[int, int, str, bool]] = []
            # Possessive "'s" is blanked, not removed, so offsets in `run` stay those of the text.
            cleaned = _POSSESSIVE_RE.sub(lambda p: " " * len(p.group()), run)
            known = 0  # tokens of the run that some key holds (PlainIndex only)
            for t in _TOKEN_RE.finditer(cleaned):
                word = t.group()
                if any_case and word in _LOWER_STOPWORDS:
                    if vocabulary is None or known >= 2:
                        self._name_ngrams(base, tokens, mode, has_plain, has_lc, cleaned)
                    tokens, known = [], 0
                    continue
                folded = word.lower() if word.isascii() else fold(word)
                if vocabulary is not None and folded in vocabulary:
                    known += 1
                capital = word[0].isupper() or folded in _PARTICLE_SET
                tokens.append((t.start(), t.end(), folded, capital))
            if vocabulary is None or known >= 2:  # a key has two tokens or more
                self._name_ngrams(base, tokens, mode, has_plain, has_lc, cleaned)

    def _lower_case_names(self, text: str) -> None:
        # n-grams (2 to MAX_NAME_TOKENS words, joined only by spaces, commas, full stops, hyphens
        # or apostrophes) whose first and last words are not common words and that hold a word
        # that is not capitalised (capitalised n-grams were checked by the capitalised pass). A
        # distinctive name never has a common word at its ends, and most words of prose are
        # common, so few n-grams are hashed; word positions are worked out only for a hit.
        common = common_words()
        written = _WORD_RE.findall(text)
        if text.isascii():
            folded = _WORD_RE.findall(text.lower())  # same words, in C
        else:
            folded = [w.lower() if w.isascii() else fold(w) for w in written]
        rare = {k for k, w in enumerate(folded) if w not in common}
        if len(rare) < 2 and not (rare and _TITLE_SET.intersection(folded)):
            return  # a name needs two words that are not common (or a title and one)
        n = len(written)
        spans: list[tuple[int, int]] | None = None
        starts = sorted(rare | {k for k, w in enumerate(folded) if w in _TITLE_SET})
        for i in starts:
            if i >= n - 1:
                break
            capital = written[i][0].isupper()
            words_so_far = folded[i]
            for j in range(i + 1, min(n, i + MAX_NAME_TOKENS)):
                words_so_far = f"{words_so_far} {folded[j]}"
                capital = capital and written[j][0].isupper()
                if j not in rare or capital:
                    continue
                found = self.refs("name_lc", words_so_far)
                if not found:
                    continue
                if spans is None:
                    spans = [m.span() for m in _WORD_RE.finditer(text)]
                if all(
                    _NAME_GAP_RE.fullmatch(text[spans[k - 1][1] : spans[k][0]]) for k in range(i + 1, j + 1)
                ):
                    start, end = spans[i][0], spans[j][1]
                    self.matches.extend(Match(start=start, end=end, kind="name", subject_ref=ref) for ref in found)

    @staticmethod
    def _capitalised_runs(text: str, ascii_text: bool, run_re: re.Pattern[str]) -> Iterator[re.Match[str]]:
        pair_re = _NAME_PAIR_RES[ascii_text]
        pos = 0
        while (pair := pair_re.search(text, pos)) is not None:
            run = run_re.match(text, pair.start())
            if run is None:
                pos = pair.start() + 1
                continue
            yield run
            pos = run.end()

    def _name_ngrams(
        self,
        base: int,
        tokens: list[tuple[int, int, str, bool]],
        mode: NameMode,
        has_plain: bool,
        has_lc: bool,
        run: str,
    ) -> None:
        strict = self.strict_initials
        vocabulary = getattr(self.index, "name_vocabulary", None)
        n = len(tokens)
        for i in range(n - 1):
            if len(tokens[i + 1][2]) == 1 and "," not in run[tokens[i][1] : tokens[i + 1][0]]:
                # "Quartermaine, A." is a name; "Cormaine. E-mail" and "Cormaine E" are not.
                first_pair_ok = False
            else:
                first_pair_ok = True
            if strict and i > 0 and len(tokens[i][2]) == 1 and tokens[i - 1][3]:
                continue  # "Paric D. Tercroft": the middle initial of another name, not "D. Tercroft"
            if vocabulary is not None and tokens[i][2] not in vocabulary:
                continue
            words = tokens[i][2]
            capital = tokens[i][3]
            for j in range(i + 1, min(n, i + MAX_NAME_TOKENS)):
                words = f"{words} {tokens[j][2]}"
                capital = capital and tokens[j][3]
                if vocabulary is not None and tokens[j][2] not in vocabulary:
                    continue
                if j == i + 1 and not first_pair_ok:
                    continue
                start, end = base + tokens[i][0], base + tokens[j][1]
                # Capitalised n-grams are every name's; other n-grams only distinctive names'
                # ("name_lc"), unless every name is matched in any case.
                if has_lc:
                    self.check("name_lc", words, start, end)
                if has_plain and (capital or mode == "any_case"):
                    self.check("name", words, start, end)
                if j - i >= 2 and all(len(t[2]) == 1 for t in tokens[i + 1 : j]):
                    # "Ada B. Quartermaine": a middle initial between the first and the last name.
                    short = f"{tokens[i][2]} {tokens[j][2]}"
                    if has_lc:
                        self.check("name_lc", short, start, end)
                    if has_plain and (capital or mode == "any_case"):
                        self.check("name", short, start, end)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

# Encoded identifiers ("encoded" transform): base64 tokens of at least 12 characters and hex
# strings of at least 6 bytes, decoded and searched when the result is printable text.
_BASE64_RE = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{12,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX_RE = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){6,}(?![0-9A-Fa-f])")


def _find_in(text: str, index: KeyIndex, options: MatchOptions) -> list[Match]:
    finder = _Finder(index, options.strict_initials)
    plain = isinstance(index, PlainIndex)
    if index.has_kind("email") and "@" in text:
        finder.emails(text)
    phones, identifiers = index.has_kind("phone"), index.has_kind("identifier")
    if (phones or identifiers) and (not plain or index.may_hold_digits(text)):
        finder.digit_regions(text, phones, identifiers)
    if (index.has_kind("name") or index.has_kind("name_lc")) and (not plain or index.may_hold_names(text)):
        if "@" in text:  # a name inside an e-mail address is the address's business, not a name
            text = _EMAIL_LIKE_RE.sub(lambda m: " " * len(m.group()), text)
        finder.names(text, options.names)
    return finder.matches


def _decoded(token: str) -> str | None:
    raw: bytes | None = None
    if _HEX_RE.fullmatch(token) and len(token) % 2 == 0:
        try:
            raw = bytes.fromhex(token)
        except ValueError:
            raw = None
    if raw is None:
        bare = token.rstrip("=")
        padded = bare + "=" * (-len(bare) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(ch.isprintable() or ch.isspace() for ch in text) < 0.9 * len(text):
        return None
    return text


def _encoded_matches(text: str, index: KeyIndex, options: MatchOptions) -> list[Match]:
    inner = MatchOptions(transforms=options.transforms - {"encoded"}, names="any_case", strict_initials=options.strict_initials)
    found: list[Match] = []
    seen: set[tuple[int, int]] = set()
    for pattern in (_HEX_RE, _BASE64_RE):
        for m in pattern.finditer(text):
            if (m.start(), m.end()) in seen:
                continue
            seen.add((m.start(), m.end()))
            decoded = _decoded(m.group())
            if decoded is None:
                continue
            for hit in find_matches(decoded, index, inner):
                found.append(Match(start=m.start(), end=m.end(), kind=hit.kind, subject_ref=hit.subject_ref))
    return found


def find_matches(text: str, index: KeyIndex, options: MatchOptions = DEFAULT_OPTIONS) -> list[Match]:
    """Every protected span in `text` (original offsets), sorted by position, one per span and subject."""
    if index.rule_count == 0 or not text:
        return []
    normalized: Normalized = normalize(text, options.transforms)
    matches = _find_in(normalized.text, index, options)
    if normalized.changed and matches:
        mapped: list[Match] = []
        for m in matches:
            start, end = normalized.span(m.start, m.end)
            mapped.append(Match(start=start, end=end, kind=m.kind, subject_ref=m.subject_ref))
        matches = mapped
    if "encoded" in options.transforms:
        matches += _encoded_matches(text, index, options)
    unique = set(matches)
    return sorted(unique, key=lambda m: (m.start, m.end, m.kind, m.subject_ref))


def redact_spans(text: str, spans: Iterable[tuple[int, int]], replacement: str) -> str:
    """Replace the union of the spans with one `replacement` per merged span."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return text
    pieces: list[str] = []
    cursor = 0
    for start, end in merged:
        pieces.append(text[cursor:start])
        pieces.append(replacement)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


@dataclass(frozen=True)
class SubjectFinder:
    """The matches of one subject in any text (the anonymiser's and the scan's confirmation step)."""

    index: PlainIndex
    options: MatchOptions = field(default_factory=lambda: SCAN_OPTIONS)

    @classmethod
    def for_subject(cls, identifiers: SubjectIdentifiers, options: MatchOptions | None = None) -> SubjectFinder:
        index = PlainIndex.build([("0", identifiers)])
        return cls(index, options or SCAN_OPTIONS)

    def match(self, text: str) -> list[tuple[str, int, int]]:
        """(kind, start, end) of every identifier of the subject in `text`, in order."""
        return sorted({(m.kind, m.start, m.end) for m in find_matches(text, self.index, self.options)}, key=lambda t: (t[1], t[2], t[0]))


__all__ = [
    "KINDS",
    "GuardIndex",
    "KeyIndex",
    "Match",
    "MatchOptions",
    "PlainIndex",
    "RuleHash",
    "SubjectFinder",
    "SubjectIdentifiers",
    "find_matches",
    "is_distinctive_name",
    "keyed_digest",
    "name_keys",
    "name_tokens",
    "redact_spans",
    "rule_hashes",
    "subject_keys",
]
