"""The corpus scan's pre-filter: which lines of a block can hold one of the subjects' identifiers.

Every anchor of every subject (`pii.subjects`) goes into one RE2 automaton (a DFA: linear time,
whatever the number of anchors), so a block is read once for a whole batch of subjects. See
`Prefilter` for the two shapes of search and the folded second pass over non-ASCII blocks.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import re2

from pii.subjects import SubjectAnchors
from pii.textnorm import DEFAULT_TRANSFORMS, fold_chars

# Up to this many separator-tolerant key regexes, the RE2 automaton searches the block itself
# (about 500 MB/s for one subject, 230 MB/s for 20); past it, the DFA of the interleaved separator
# classes grows too large and a projected copy without separators searched for literal keys wins
# (about 120 MB/s for 100 subjects, translate included).
_SEPARATE_REGEX_MAX = 60

# Bytes the projected pre-filter deletes: the separators that people put inside phone numbers and
# identifiers ("(415) 555-0143", "GB29 NWBK ..."). Newlines are kept: they delimit records.
_PROJECTION_DELETE = b" \t\r\f\v-./()"
# Runs of five or more number words (the pre-filter's view of `pii.textnorm`'s spelled digits).
_NUMBER_WORDS = (
    rb"zero|oh|one|two|three|four|five|six|seven|eight|nine|null|eins|zwei|drei|vier|funf|fuenf|sechs|"
    rb"sieben|acht|neun|un|une|deux|trois|quatre|cinq|sept|huit|neuf|cero|uno|dos|tres|cuatro|cinco|"
    rb"seis|siete|ocho|nueve|double|triple"
)
_SPELLED_RUN = rb"\b(?:" + _NUMBER_WORDS + rb")(?:[ ,.\-]{1,3}(?:" + _NUMBER_WORDS + rb"|\d{1,4})){4,}"
# The same in a projected block (separators deleted): five number words in a row.
_SPELLED_RUN_PROJECTED = rb"(?:" + _NUMBER_WORDS + rb"){5,}"
# A JSON \\u escape, or a surrogate pair of them (characters outside the BMP: "\\ud835\\udc00").
_JSON_ESCAPE_RE = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})", re.IGNORECASE)
# RE2 builds its DFA lazily within this memory; a batch of a few hundred subjects needs a few MB.
_RE2_MAX_MEM = 256 << 20


def _unescape(m: re.Match[str]) -> str:
    if m.group(3) is not None:
        return chr(int(m.group(3), 16))
    high, low = int(m.group(1), 16), int(m.group(2), 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def _re2(pattern: bytes) -> Any:
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    return re2.compile(pattern, options)


class Prefilter:
    """Finds the candidate lines of a lower-cased block of whole lines: lines that hold an anchor.

    Every anchor of every subject goes into one RE2 automaton (a DFA: linear time, whatever the
    number of anchors), so a block is read once for a whole batch of subjects. Two shapes, chosen
    once from the anchors (both over-approximate; both are checked against the matcher by tests):

    * direct (a few subjects): literal anchors (surname, e-mail) and separator-tolerant regexes of
      the phone and identifier keys, searched in the lower-cased block itself;
    * projected (a batch): the block is stripped of separators once (`bytes.translate`, C speed)
      and the anchors, projected the same way, are all literals; hits map back to the original
      lines by line index, since newlines survive the projection.

    A hit makes its whole line a candidate and the search goes on at the next line. Which subject a
    line concerns is not decided here: the matcher (`pii.matcher`) looks for every subject of the
    pass in each candidate line. With spelled-out digits on, a run of number words is an anchor too.
    Blocks with non-ASCII characters or JSON \\u escapes are also searched with their characters
    folded (`pii.textnorm.fold_chars`: dashes, spaces, invisibles, look-alikes, accents).
    """

    def __init__(self, anchors: Sequence[SubjectAnchors], transforms: frozenset[str] = DEFAULT_TRANSFORMS) -> None:
        literal: set[bytes] = set()
        regexes: set[bytes] = set()
        keys: set[bytes] = set()
        for subject in anchors:
            literal.update(subject.literal_anchors)
            regexes.update(src.replace(rb"(?![0-9])", b"") for _, src in subject.regex_anchors)
            keys.update(subject.key_anchors)
        self._transforms = transforms
        spelled = "spelled_digits" in transforms and any(a.kinds & {"phone", "identifier"} for a in anchors)
        self.projected = len(regexes) > _SEPARATE_REGEX_MAX
        if self.projected:
            projected = {a.translate(None, _PROJECTION_DELETE) for a in literal | keys}
            parts = [re.escape(a) for a in sorted(projected) if a]
            if spelled:
                parts.append(_SPELLED_RUN_PROJECTED)
        else:
            parts = [re.escape(a) for a in sorted(literal) if a] + sorted(regexes)
            if spelled:
                parts.append(_SPELLED_RUN)
        self._search = _re2(b"|".join(parts)).search if parts else None

    def lines(self, lowered: bytes, lo: int, hi: int, fold: bool = False) -> set[int]:
        """Start offsets (in the block) of the candidate lines of lowered[lo:hi].

        fold: the block holds non-ASCII characters or JSON \\u escapes; it is searched again with
        its characters folded.
        """
        if self._search is None:
            return set()
        starts = set(self._line_hits(lowered, lo, hi))
        if fold:
            starts.update(self._folded_hits(lowered, lo, hi))
        return starts

    def _line_hits(self, lowered: bytes, lo: int, hi: int) -> Iterator[int]:
        if self.projected:
            projected = lowered[lo:hi].translate(None, _PROJECTION_DELETE)
            yield from _map_lines(lowered, lo, hi, projected, self._hit_lines(projected))
            return
        search = self._search
        assert search is not None  # lines() returns before searching when there is no anchor
        pos = lo
        while pos < hi:
            m = search(lowered, pos, hi)
            if m is None:
                return
            start = lowered.rfind(b"\n", lo, m.start()) + 1 or lo
            yield start
            end = lowered.find(b"\n", m.end() - 1, hi)
            pos = hi if end == -1 else end + 1

    def _hit_lines(self, text: bytes) -> Iterator[int]:
        """Positions of the first hit in each line of `text` that has one."""
        search = self._search
        assert search is not None  # lines() returns before searching when there is no anchor
        pos, hi = 0, len(text)
        while pos < hi:
            m = search(text, pos)
            if m is None:
                return
            yield m.start()
            end = text.find(b"\n", m.end() - 1)
            pos = hi if end == -1 else end + 1

    def _folded_hits(self, lowered: bytes, lo: int, hi: int) -> Iterator[int]:
        segment = lowered[lo:hi]
        text = segment.decode("utf-8", errors="surrogateescape")
        if "\\u" in text:
            text = _JSON_ESCAPE_RE.sub(_unescape, text)
        folded = fold_chars(text, self._transforms).encode("utf-8", errors="surrogatepass").lower()
        if folded == segment:
            return
        if self.projected:
            folded = folded.translate(None, _PROJECTION_DELETE)
        yield from _map_lines(lowered, lo, hi, folded, self._hit_lines(folded))


def _map_lines(original: bytes, lo: int, hi: int, rewritten: bytes, positions: Iterable[int]) -> Iterator[int]:
    """Start offsets in `original` of the lines that hold `positions` of `rewritten` (same lines)."""
    line_index, counted_to = 0, 0
    original_line, original_start = 0, lo
    for pos in sorted(positions):
        line_index += rewritten.count(b"\n", counted_to, pos)
        counted_to = pos
        while original_line < line_index:
            original_start = original.find(b"\n", original_start, hi) + 1
            original_line += 1
        yield original_start


