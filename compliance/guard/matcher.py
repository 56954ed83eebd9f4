"""The inference-time guard: keyed-hash suppression rules and the text filter that applies them.

From the moment an officer approves an erasure request, the subject's identifiers become
*suppression rules*: keyed hashes (HMAC-SHA256, key from settings, passed in as bytes) of their
normalised forms. No plaintext identifier is kept by the guard. At inference time `guard_text`
finds candidate spans in a model output (e-mail-like, phone-like, identifier-like and name-like
spans), normalises them exactly as the rules were normalised, hashes them with the same key and
looks the digests up. A hit is redacted or the whole output is blocked.

    rules = rule_hashes(SubjectIdentifiers("Ada Quartermaine", ["ada@example.com"], ["020 7946 0018"], []), key)
    index = GuardIndex.build([(subject_ref, r.kind, r.digest_hex) for r in rules], key)
    guard_text("Call Ada Quartermaine on +44 20 7946 0018.", index, GuardPolicy()).text
    # -> 'Call [removed] on [removed].'

Design notes (why it is shaped like this):
- One HMAC costs about a microsecond, so the candidate count per kilobyte, not the rule count,
  sets the cost. Each kind has a regular-expression prefilter that only yields plausible spans:
  names are runs of two or more capitalised words (or all-caps, initials, "Last, First"); phones
  are digit runs with separators; identifiers are digit-bearing tokens joined across single
  separators. Rule lookup is one dict probe per candidate, so 10 rules or 100,000 cost the same.
- A single word never matches: name rules always have two or more tokens, so a person who shares
  only a first name (or only a surname) with a subject is never flagged.
- The HMAC message is versioned and carries the kind ("guard-v1", kind, value), so a phone key and
  an SSN with the same digits hash differently and a future format change cannot collide.
- Name tokens are split at apostrophes and hyphens on both sides ("O'Brien" -> "o brien",
  "Mary-Jane" -> "mary jane"), possessives are dropped ("Quartermaine's"), typographic apostrophes
  count as plain ones, and accents are stripped (pii.normalize.fold), so common spelling variants
  of one name agree.

Pure: no Django, no environment reads. Safe to import in a serving process.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

from pii.normalize import (
    PHONE_MIN_DIGITS,
    fold,
    name_variants,
    normalize_email,
    normalize_identifier,
    normalize_phone,
)

Kind = Literal["name", "email", "phone", "identifier"]
KINDS: tuple[str, ...] = get_args(Kind)

# The HMAC message is b"guard-v1" US kind US value. Changing it invalidates every stored rule.
_MESSAGE_PREFIX = "guard-v1\x1f"
# Shorter keys make the digests guessable by brute force over the (small) space of identifiers.
MIN_KEY_BYTES = 16
# An identifier shorter than this (after dropping separators) matches too much ordinary text
# ("12345", "ab12") to be suppressed safely; rule_hashes refuses it.
MIN_IDENTIFIER_CHARS = 6
# Longest identifier kept as one candidate (an IBAN is at most 34 characters).
MAX_IDENTIFIER_CHARS = 40
# Names are matched as n-grams of this many tokens at most ("Ada Mary Jane Quartermaine" is 4).
MAX_NAME_TOKENS = 4
# An identifier is at most this many chunks (an IBAN in groups of four is 9 with a word before it).
_MAX_ID_CHUNKS = 10
# A digit group longer than any E.164 number (15 digits) may hide a phone glued to other digits.
_LONG_DIGIT_GROUP = 15


# --------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------


class SubjectIdentifiersLike(Protocol):
    """What the subject gave us: the lead's decrypted request fields, or SubjectIdentifiers."""

    @property
    def full_name(self) -> str: ...
    @property
    def emails(self) -> Sequence[str]: ...
    @property
    def phones(self) -> Sequence[str]: ...
    @property
    def others(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class SubjectIdentifiers:
    """A plain carrier of a subject's identifiers (plaintext: never store or log it)."""

    full_name: str = ""
    emails: Sequence[str] = ()
    phones: Sequence[str] = ()
    others: Sequence[str] = ()

    def __repr__(self) -> str:  # keep plaintext out of logs and tracebacks
        return (
            f"SubjectIdentifiers(<{len(self.emails)} e-mails, {len(self.phones)} phones, "
            f"{len(self.others)} others>)"
        )


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


@dataclass(frozen=True)
class GuardPolicy:
    """What to do with a hit.

    mode: "redact" replaces each protected span with `replacement`; "block" withholds the whole
    output and returns `block_text`.
    lowercase_names: also match names written entirely in lower case ("ada quartermaine"). Off by
    default because prose is mostly lower-case words: it multiplies the name candidates by about
    ten and the cost by three to four (see tests/benchmarks/bench_guard.py); lower-case function
    words ("the", "and", "he") still break a name in that mode.
    """

    mode: Literal["redact", "block"] = "redact"
    replacement: str = "[removed]"
    block_text: str = "[response withheld: it contained personal data that is subject to erasure]"
    lowercase_names: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("redact", "block"):
            raise ValueError("mode must be 'redact' or 'block'")
        if not isinstance(self.replacement, str) or not isinstance(self.block_text, str):
            raise ValueError("replacement and block_text must be strings")


@dataclass(frozen=True)
class Match:
    """A protected span of the output. Never carries the matched text."""

    start: int
    end: int
    kind: str
    subject_ref: str


@dataclass(frozen=True)
class GuardResult:
    text: str
    blocked: bool
    matches: list[Match] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return bool(self.matches)


# --------------------------------------------------------------------------------------------
# Keyed hashing
# --------------------------------------------------------------------------------------------

_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _KeyedHasher:
    """HMAC-SHA256 with the key schedule done once (RFC 2104), about twice as fast as hmac.digest.

    The padded-key states are copied per message; they are never updated in place, so one
    instance is safe to share between threads.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the guard key must be at least {MIN_KEY_BYTES} bytes")
        key = bytes(key)
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, kind: str, normalized: str) -> bytes:
        inner = self._inner.copy()
        inner.update(f"{_MESSAGE_PREFIX}{kind}\x1f{normalized}".encode())
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


# --------------------------------------------------------------------------------------------
# Normalisation shared by the rule side and the matching side
# --------------------------------------------------------------------------------------------

# Typographic apostrophes count as plain ones; a possessive "'s" is not part of a name.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})
_POSSESSIVE_RE = re.compile(r"'[sS]?(?![^\W\d_])")
_LETTERS_RE = re.compile(r"[^\W\d_]+")
# Within a run: a token is letters (combining marks allowed, for text that is not NFC).
_TOKEN_RE = re.compile(r"[^\W\d_](?:[^\W\d_]|[\u0300-\u036f])*")


def name_tokens(text: str) -> list[str]:
    """Normalised name tokens: folded, possessives dropped, split at apostrophes and hyphens."""
    return _LETTERS_RE.findall(fold(_POSSESSIVE_RE.sub(" ", text.translate(_APOSTROPHES))))


def name_keys(full_name: str) -> set[str]:
    """Every normalised written form of a name that the guard protects (two tokens or more).

    Built on pii.normalize.name_variants (full, "first last", "last, first", "f. last"), plus the
    initial or "last, first" with a multi-token surname ("C. O'Brien", "van Beethoven, Ludwig").
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
    for extra in ([tokens[0][0], *rest], [*rest, tokens[0]], tokens[:MAX_NAME_TOKENS]):
        if 2 <= len(extra) <= MAX_NAME_TOKENS:
            keys.add(" ".join(extra))
    return keys


def _identifier_key(value: str) -> str:
    return normalize_identifier(value)


# --------------------------------------------------------------------------------------------
# Rules (approval time)
# --------------------------------------------------------------------------------------------


def rule_hashes(identifiers: SubjectIdentifiersLike, key: bytes) -> list[RuleHash]:
    """The suppression rules for one subject: exactly what the database stores (with subject_ref).

    Raises ValueError (naming the field, never its value) for an e-mail without '@', a phone with
    fewer than PHONE_MIN_DIGITS digits, or an identifier shorter than MIN_IDENTIFIER_CHARS: such
    a value would either match nothing or match ordinary text, and the officer should know.
    A name of one token gives no rule: a single word is never matched (see the module notes).
    """
    hasher = _KeyedHasher(key)
    wanted: list[tuple[str, str]] = []
    for name_key in sorted(name_keys(identifiers.full_name or "")):
        wanted.append(("name", name_key))
    for i, email in enumerate(identifiers.emails):
        normalized = normalize_email(email)
        if "@" not in normalized or normalized.startswith("@") or normalized.endswith("@"):
            raise ValueError(f"emails[{i}] is not an e-mail address")
        wanted.append(("email", normalized))
    for i, phone in enumerate(identifiers.phones):
        phone_key = normalize_phone(phone)
        if phone_key is None:
            raise ValueError(f"phones[{i}] has fewer than {PHONE_MIN_DIGITS} digits")
        wanted.append(("phone", phone_key))
    for i, other in enumerate(identifiers.others):
        normalized = _identifier_key(other)
        if not MIN_IDENTIFIER_CHARS <= len(normalized) <= MAX_IDENTIFIER_CHARS:
            raise ValueError(
                f"others[{i}] must have {MIN_IDENTIFIER_CHARS} to {MAX_IDENTIFIER_CHARS} letters or digits"
            )
        wanted.append(("identifier", normalized))
    seen: set[tuple[str, str]] = set()
    out: list[RuleHash] = []
    for kind, normalized in wanted:
        digest_hex = hasher.digest(kind, normalized).hex()
        if (kind, digest_hex) not in seen:
            seen.add((kind, digest_hex))
            out.append(RuleHash(kind=kind, digest_hex=digest_hex))
    return out


# --------------------------------------------------------------------------------------------
# The index (immutable; swapped whole when rules change)
# --------------------------------------------------------------------------------------------


class GuardIndex:
    """Digest -> subject_refs lookup plus the keyed hasher. Immutable once built.

    Build a new one when rules change and swap the reference (GuardCache does this); readers
    holding the old one keep a consistent view.
    """

    __slots__ = ("_hasher", "_lookup", "_kinds", "rule_count", "subject_count")

    def __init__(self, hasher: _KeyedHasher, lookup: dict[bytes, tuple[str, ...]], kinds: frozenset[str], rule_count: int) -> None:
        self._hasher = hasher
        self._lookup = lookup
        self._kinds = kinds
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
        return self._lookup.get(self._hasher.digest(kind, normalized), ())

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
# Lower-case words that never belong to a name; used only when matching lower-case names. Words
# that are also names in some language ("he", "do", "to", "an", "will", "may") are left out on
# purpose: capitalised forms are never filtered anyway.
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
    """Collects matches for one text; caches lookups so a repeated candidate is hashed once."""

    __slots__ = ("index", "matches", "_seen")

    def __init__(self, index: GuardIndex) -> None:
        self.index = index
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
        for ref in found:
            self.matches.append(Match(start=start, end=end, kind=kind, subject_ref=ref))
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
    def names(self, text: str, lowercase: bool) -> None:
        ascii_text = text.isascii()
        run_re = _NAME_RUN_RES[(ascii_text, lowercase)]
        for m in run_re.finditer(text) if lowercase else self._capitalised_runs(text, ascii_text, run_re):
            run = m.group().translate(_APOSTROPHES)
            base = m.start()
            tokens: list[tuple[int, int, str]] = []
            # Possessive "'s" is blanked, not removed, so offsets in `run` stay those of the text.
            cleaned = _POSSESSIVE_RE.sub(lambda p: " " * len(p.group()), run)
            for t in _TOKEN_RE.finditer(cleaned):
                word = t.group()
                if lowercase and word in _LOWER_STOPWORDS:
                    self._name_ngrams(base, tokens)
                    tokens = []
                    continue
                tokens.append((t.start(), t.end(), _fold_token(word)))
            self._name_ngrams(base, tokens)

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

    def _name_ngrams(self, base: int, tokens: list[tuple[int, int, str]]) -> None:
        n = len(tokens)
        for i in range(n - 1):
            words = tokens[i][2]
            for j in range(i + 1, min(n, i + MAX_NAME_TOKENS)):
                words = f"{words} {tokens[j][2]}"
                self.check("name", words, base + tokens[i][0], base + tokens[j][1])


def find_matches(text: str, index: GuardIndex, *, lowercase_names: bool = False) -> list[Match]:
    """Every protected span in `text`, sorted by position (one Match per span and subject)."""
    if index.rule_count == 0 or not text:
        return []
    finder = _Finder(index)
    if index.has_kind("email") and "@" in text:
        finder.emails(text)
    phones, identifiers = index.has_kind("phone"), index.has_kind("identifier")
    if phones or identifiers:
        finder.digit_regions(text, phones, identifiers)
    if index.has_kind("name"):
        finder.names(text, lowercase_names)
    unique = set(finder.matches)
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


def guard_text(text: str, index: GuardIndex, policy: GuardPolicy | None = None, *, context: str = "") -> GuardResult:
    """Filter one model output through the suppression rules.

    Returns the text unchanged when nothing matches; otherwise the redacted text (mode "redact")
    or policy.block_text with blocked=True (mode "block"). Matches carry positions in the input
    text, the kind and the subject_ref, never the matched characters.

    context: text shown to the reader just before `text` (the end of the prompt). A value that
    starts in the context and ends in the output ("...call Ada" + " Quartermaine") is caught;
    only the part inside `text` is redacted, and values wholly inside the context are ignored.
    """
    policy = policy or GuardPolicy()
    if context:
        offset = len(context)
        matches = [
            Match(start=max(0, m.start - offset), end=m.end - offset, kind=m.kind, subject_ref=m.subject_ref)
            for m in find_matches(context + text, index, lowercase_names=policy.lowercase_names)
            if m.end > offset
        ]
    else:
        matches = find_matches(text, index, lowercase_names=policy.lowercase_names)
    if not matches:
        return GuardResult(text=text, blocked=False, matches=[])
    if policy.mode == "block":
        return GuardResult(text=policy.block_text, blocked=True, matches=matches)
    return GuardResult(
        text=redact_spans(text, ((m.start, m.end) for m in matches), policy.replacement),
        blocked=False,
        matches=matches,
    )


# --------------------------------------------------------------------------------------------
# In-process cache of the current index
# --------------------------------------------------------------------------------------------

RulesLoader = Callable[[], tuple[str, Iterable[tuple[str, str, str]]]]


@dataclass(frozen=True)
class GuardHealth:
    """For a health endpoint: which rules are in force and whether refreshing works."""

    version: str | None
    rule_count: int
    subject_count: int
    loaded_at: float | None  # time.time() of the last successful build
    last_refresh_at: float | None  # last attempt, successful or not
    last_error: str | None  # exception class and message of the last failed attempt
    last_error_at: float | None
    healthy: bool  # a version is loaded and the last attempt succeeded


@dataclass(frozen=True)
class _Snapshot:
    version: str | None
    index: GuardIndex
    loaded_at: float | None


class GuardCache:
    """Holds the current GuardIndex; refresh() swaps in a new one when the rules version changes.

    Reads (`index`, `version`) take no lock: the snapshot is one immutable object replaced by a
    single assignment. Refreshes are serialised by a lock so two threads never build at once.
    If the loader fails (database down), the last good index stays in force and the error is
    recorded for `health()`: the guard keeps suppressing with the rules it had.
    """

    def __init__(self, *, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = bytes(key)
        self._clock = clock
        self._snapshot = _Snapshot(version=None, index=GuardIndex.empty(self._key), loaded_at=None)
        self._refresh_lock = threading.Lock()
        self._last_refresh_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    @property
    def index(self) -> GuardIndex:
        return self._snapshot.index

    @property
    def version(self) -> str | None:
        return self._snapshot.version

    def refresh(self, loader: RulesLoader, *, force: bool = False) -> bool:
        """Load (version, rules); rebuild only if the version changed. True if a new index is in force.

        The loader may return the rules lazily; they are only consumed when the version is new.
        Exceptions from the loader or from building are caught and recorded, never raised: the
        caller is a serving path that must keep answering.
        """
        with self._refresh_lock:
            now = self._clock()
            self._last_refresh_at = now
            try:
                version, rules = loader()
                version = str(version)
                if not force and version == self._snapshot.version:
                    self._last_error = None
                    return False
                index = GuardIndex.build(rules, self._key)
            except Exception as exc:  # noqa: BLE001 - recorded for health(); last good index stays
                self._last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                self._last_error_at = now
                return False
            self._snapshot = _Snapshot(version=version, index=index, loaded_at=now)
            self._last_error = None
            return True

    def guard(self, text: str, policy: GuardPolicy | None = None) -> GuardResult:
        return guard_text(text, self._snapshot.index, policy)

    def health(self) -> GuardHealth:
        snapshot = self._snapshot
        return GuardHealth(
            version=snapshot.version,
            rule_count=snapshot.index.rule_count,
            subject_count=snapshot.index.subject_count,
            loaded_at=snapshot.loaded_at,
            last_refresh_at=self._last_refresh_at,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            healthy=snapshot.version is not None and self._last_error is None,
        )
