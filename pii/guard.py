"""The inference-time guard: the policy, the text filter, the stream filter and the rules cache.

From the moment an officer approves an erasure request, the subject's identifiers become
*suppression rules*: keyed hashes of their normalised forms (`pii.matcher.rule_hashes`). No
plaintext identifier is kept by the guard. At inference time `guard_text` asks the matcher
(`pii.matcher.find_matches`, the same matcher the corpus scan uses) for protected spans in a model
output and redacts them, or withholds the whole output.

    rules = rule_hashes(SubjectIdentifiers("Ada Quartermaine", ("ada@example.com",), ("020 7946 0018",)), key)
    index = GuardIndex.build([(subject_ref, r.kind, r.digest_hex) for r in rules], key)
    guard_text("Call Ada Quartermaine on +44 20 7946\u20130018.", index, GuardPolicy()).text
    # -> 'Call [removed] on [removed].'

Streams: `StreamGuard` filters a response that arrives in pieces (tokens of a generation, chunks of
a streamed HTTP response). It holds back the last `holdback_chars` characters until they are known
to be safe, so an identifier split across pieces is still caught; its state can travel with the
client (`StreamGuard.state` / `from_state`), which makes a stateless streaming endpoint possible.

Pure: no Django, no environment reads. Safe to import in a serving process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pii.matcher import GuardIndex, KeyIndex, Match, MatchOptions, NameMode, find_matches, redact_spans
from pii.textnorm import DEFAULT_TRANSFORMS, validate_transforms

# An identifier written with separators is at most ~45 characters (an IBAN in groups of four with
# spaces, a phone with a country code and brackets); spelled-out digits are longer ("five five
# five ..." is about 5 characters per digit), so the default holds back enough for both.
DEFAULT_HOLDBACK_CHARS = 96


@dataclass(frozen=True)
class GuardPolicy:
    """What to look for and what to do with a hit.

    mode: "redact" replaces each protected span with `replacement`; "block" withholds the whole
    output and returns `block_text`.
    names: "distinctive" (default) matches every protected name when capitalised and distinctive
    names (`pii.matcher.is_distinctive_name`) in any case; "capitalised" only capitalised names;
    "any_case" every name in any case (costs three to four times more on prose).
    lowercase_names: the older switch; True means names="any_case".
    transforms: the text transforms applied before matching (`pii.textnorm.TRANSFORMS`); all but
    "encoded" by default.
    """

    mode: Literal["redact", "block"] = "redact"
    replacement: str = "[removed]"
    block_text: str = "[response withheld: it contained personal data that is subject to erasure]"
    lowercase_names: bool = False
    names: NameMode = "distinctive"
    transforms: frozenset[str] = DEFAULT_TRANSFORMS

    def __post_init__(self) -> None:
        if self.mode not in ("redact", "block"):
            raise ValueError("mode must be 'redact' or 'block'")
        if not isinstance(self.replacement, str) or not isinstance(self.block_text, str):
            raise ValueError("replacement and block_text must be strings")
        object.__setattr__(self, "transforms", validate_transforms(self.transforms))
        if self.lowercase_names:
            object.__setattr__(self, "names", "any_case")
        MatchOptions(transforms=self.transforms, names=self.names)  # validates names

    @property
    def options(self) -> MatchOptions:
        return MatchOptions(transforms=self.transforms, names=self.names)


@dataclass(frozen=True)
class GuardResult:
    text: str
    blocked: bool
    matches: list[Match] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return bool(self.matches)


def guard_text(text: str, index: KeyIndex, policy: GuardPolicy | None = None, *, context: str = "") -> GuardResult:
    """Filter one model output through the suppression rules.

    Returns the text unchanged when nothing matches; otherwise the redacted text (mode "redact")
    or policy.block_text with blocked=True (mode "block"). Matches carry positions in the input
    text, the kind and the subject_ref, never the matched characters.

    context: text shown to the reader just before `text` (the end of the prompt, or what a stream
    already emitted). A value that starts in the context and ends in the output ("...call Ada" +
    " Quartermaine") is caught; only the part inside `text` is redacted, and values wholly inside
    the context are ignored.
    """
    policy = policy or GuardPolicy()
    options = policy.options
    if context:
        offset = len(context)
        matches = [
            Match(start=max(0, m.start - offset), end=m.end - offset, kind=m.kind, subject_ref=m.subject_ref)
            for m in find_matches(context + text, index, options)
            if m.end > offset
        ]
    else:
        matches = find_matches(text, index, options)
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
# Streams
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamState:
    """What a stream filter carries between pieces: text not yet emitted, and the emitted tail.

    Both are plaintext of the response itself (never more than 2 x holdback characters): a client
    that keeps the state keeps part of its own response, nothing else.
    """

    pending: str = ""
    context: str = ""
    blocked: bool = False


class StreamGuard:
    """Filters a response that arrives in pieces; `feed` returns the text that is safe to show now.

    Emitted text is final: a value is caught when its end arrives while its beginning is still held
    back, which holds for any value of up to `holdback_chars` characters. Matches that reach back
    into already emitted text (at most `holdback_chars` of it is kept as context) are caught too;
    only their unemitted part can still be redacted, so the hold-back must cover the longest value.
    """

    def __init__(
        self,
        index: KeyIndex,
        policy: GuardPolicy | None = None,
        *,
        holdback_chars: int = DEFAULT_HOLDBACK_CHARS,
        state: StreamState | None = None,
    ) -> None:
        if holdback_chars < 1:
            raise ValueError("holdback_chars must be at least 1")
        self.index = index
        self.policy = policy or GuardPolicy()
        self.holdback_chars = holdback_chars
        state = state or StreamState()
        self._pending = state.pending
        self._context = state.context[-holdback_chars:]
        self.blocked = state.blocked
        self.matches: list[Match] = []

    @property
    def state(self) -> StreamState:
        return StreamState(pending=self._pending, context=self._context, blocked=self.blocked)

    def feed(self, piece: str, *, final: bool = False) -> str:
        """Add `piece` to the stream; return what may be shown now (redacted), possibly ""."""
        if self.blocked:
            return ""
        text = self._pending + piece
        offset = len(self._context)
        found = [
            Match(start=max(0, m.start - offset), end=m.end - offset, kind=m.kind, subject_ref=m.subject_ref)
            for m in find_matches(self._context + text, self.index, self.policy.options)
            if m.end > offset
        ]
        if found and self.policy.mode == "block":
            self.blocked = True
            self.matches.extend(found)
            self._pending = ""
            return self.policy.block_text
        safe_end = len(text) if final else max(0, len(text) - self.holdback_chars)
        for m in found:  # never cut a value in two: hold it back whole until it can be redacted
            if not final and m.start < safe_end < m.end:
                safe_end = m.start
        emitted_matches = [m for m in found if m.start < safe_end]
        self.matches.extend(m for m in emitted_matches if m.end <= safe_end)
        segment = text[:safe_end]
        spans = [(m.start, min(m.end, safe_end)) for m in emitted_matches]
        out = redact_spans(segment, spans, self.policy.replacement)
        self._pending = text[safe_end:]
        self._context = (self._context + segment)[-self.holdback_chars:]
        return out

    def close(self) -> str:
        """End of stream: everything still held back, filtered."""
        return self.feed("", final=True)


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
