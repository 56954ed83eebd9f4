"""The identifier matcher: is this span of text one of a data subject's identifiers?

One matcher for the corpus scan (`pii.scan`, confirming candidate records), the anonymiser and the
inference guard (`pii.guard`, filtering model outputs). It works in three steps:

1. **Normalise** (`pii.textnorm`): Unicode compatibility forms, invisible characters, dash and
   space classes, diacritics, look-alike letters, spelled-out digits and "at"/"dot" e-mails are
   rewritten into one canonical text, with an offset map back to the original characters.
2. **Find candidates** in the normalised text: e-mail-like spans around each "@", digit regions
   (phones and identifiers written with separators), and runs of name-like words.
3. **Look each candidate's key up** (`pii.keys` derives the keys) in an index (`pii.indexes`): `PlainIndex` (keys in memory, for the scan of a
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
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from pii.identifiers import MIN_IDENTIFIER_CHARS, SubjectIdentifiers
from pii.indexes import GuardIndex, KeyIndex, PlainIndex, RuleHash, keyed_digest, rule_hashes
from pii.keys import (
    _APOSTROPHES,
    _LOWER_STOPWORDS,
    _POSSESSIVE_RE,
    _TITLE_SET,
    KINDS,
    MAX_IDENTIFIER_CHARS,
    MAX_NAME_TOKENS,
    common_words,
    is_distinctive_name,
    name_keys,
    name_tokens,
    subject_keys,
)
from pii.normalize import PHONE_MIN_DIGITS, fold, normalize_email
from pii.textnorm import DEFAULT_TRANSFORMS, Normalized, normalize, validate_transforms

NameMode = Literal["capitalised", "distinctive", "any_case"]
NAME_MODES: tuple[str, ...] = get_args(NameMode)

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
# Candidate finders
# --------------------------------------------------------------------------------------------

# Within a run: a token is letters (combining marks allowed, for text that is not NFC).
_TOKEN_RE = re.compile(r"[^\W\d_](?:[^\W\d_]|[\u0300-\u036f])*")
# The lower-case pass of "distinctive" mode: words, and what may stand between two words of a name.
_WORD_RE = re.compile(r"[^\W\d_]+")
_NAME_GAP_RE = re.compile(r"[ \t\u00a0]{0,2}[,.]?[ \t\u00a0\n]{0,2}|['\u2019-]")
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
        vocabulary = self.index.name_vocabulary
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
        vocabulary = self.index.name_vocabulary
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
    if index.has_kind("email") and "@" in text:
        finder.emails(text)
    phones, identifiers = index.has_kind("phone"), index.has_kind("identifier")
    if (phones or identifiers) and index.may_hold_digits(text):
        finder.digit_regions(text, phones, identifiers)
    if (index.has_kind("name") or index.has_kind("name_lc")) and index.may_hold_names(text):
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
