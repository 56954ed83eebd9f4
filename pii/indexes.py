"""Indexes the matcher looks keys up in: plain keys for a scan, keyed hashes for the guard.

`PlainIndex` holds the keys of every subject of a corpus scan in memory (never stored), with cheap
RE2 tests that tell whether a text can hold any of them at all. `GuardIndex` holds only keyed
HMAC-SHA256 digests of the keys (what the database stores, `rule_hashes`): the guard never holds a
protected identifier in plaintext.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import re2

from pii.identifiers import SubjectIdentifiers
from pii.keys import KINDS, keys_field_by_field, subject_keys

# The HMAC message is b"guard-v1" US kind US value. Changing it invalidates every stored rule.
_MESSAGE_PREFIX = "guard-v1\x1f"
# Shorter keys make the digests guessable by brute force over the (small) space of identifiers.
MIN_KEY_BYTES = 16
# Candidates remembered as misses per GuardIndex (about 100 bytes each).
MISS_CACHE_SIZE = 200_000



class KeyIndex(Protocol):
    """What the finders ask: which subjects have this (kind, normalised key)?"""

    # Every token of every name key, when the index knows its keys in plaintext (else None): the
    # finder skips name n-grams that start or end with another word. Read-only here, so an index
    # that never knows its keys (GuardIndex) may declare it None for good.
    @property
    def name_vocabulary(self) -> frozenset[str] | None: ...

    def lookup(self, kind: str, normalized: str) -> tuple[str, ...]: ...
    def has_kind(self, kind: str) -> bool: ...
    def may_hold_names(self, text: str) -> bool: ...
    def may_hold_digits(self, text: str) -> bool: ...
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
            for kind, key in keys_field_by_field(identifiers) if not strict else subject_keys(identifiers):
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

    # Keyed hashes say nothing about a text before its candidates are hashed: every text may hold a key.
    name_vocabulary = None

    def may_hold_names(self, text: str) -> bool:
        return self.has_kind("name") or self.has_kind("name_lc")

    def may_hold_digits(self, text: str) -> bool:
        return self.has_kind("phone") or self.has_kind("identifier")

    def __len__(self) -> int:
        return self.rule_count

    def __repr__(self) -> str:
        return f"GuardIndex(rules={self.rule_count}, subjects={self.subject_count})"


