"""Text normalisation for identifier matching, with a map back to the original characters.

Real text writes one identifier in many ways: "020\u20137946\u00a00018" (en dash, no-break space),
"０２０ ７９４６ ００１８" (full-width digits), "Qu\u200bartermaine" (a zero-width space), "Quаrtermaine"
(a Cyrillic "а"), "Ørsted" / "Orsted", "five five five zero one four three", "ada at example dot com".
The corpus scan and the inference guard both read text through `normalize`, which rewrites it into
one canonical form before any identifier is looked for, and keeps an offset map so that every span
found in the normalised text maps back to exact characters of the original (redaction and
reporting point at what was really written).

Transforms, each named and switchable (a policy carries the set; `DEFAULT_TRANSFORMS` is all but
"encoded"):

* ``width``: NFKC compatibility folding per character (full-width and circled digits, ligatures,
  mathematical letters, superscripts).
* ``invisibles``: delete format characters (Unicode category Cf: zero-width space/joiners, BOM,
  bidi controls, word joiner), soft hyphens, variation selectors and other default-ignorables.
* ``separators``: every dash (category Pd, minus signs, the non-breaking hyphen) becomes "-",
  every space character (category Zs: no-break, narrow, thin, ideographic...) becomes " ",
  typographic apostrophes become "'".
* ``diacritics``: combining marks are removed after canonical decomposition ("é" -> "e"), and
  letters that do not decompose are folded by a table ("ø" -> "o", "ł" -> "l", "ß" -> "ss").
* ``confusables``: letters and digits that look like ASCII ones ("а" Cyrillic, "ο" Greek, "ı")
  fold to them, from the Unicode confusables data (the `confusable_homoglyphs` package). A letter
  folds to a letter and a digit to a digit, so "О" (Cyrillic O) never becomes "0".
* ``spelled_digits``: runs of number words ("five five five", "double oh seven", "fünf null")
  in English, German, French and Spanish become digits. A run must give at least
  `MIN_SPELLED_DIGITS` digits, so ordinary prose ("one or two") is left alone.
* ``at_dot``: e-mail addresses written "ada at example dot com", "ada [at] example [dot] com",
  "ada (at) example.com" or "ada @ example.com" become "ada@example.com".
* ``encoded`` (off by default): base64 and hex tokens are decoded and searched too. This one is
  applied by the matcher (`pii.matcher`), not here, because the decoded text is searched apart.

Case is not folded here: the name finder needs capitals to find names; each kind's key folds case.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import re2

CHAR_TRANSFORMS = ("width", "invisibles", "separators", "diacritics", "confusables")
PHRASE_TRANSFORMS = ("spelled_digits", "at_dot")
TRANSFORMS = (*CHAR_TRANSFORMS, *PHRASE_TRANSFORMS, "encoded")
DEFAULT_TRANSFORMS = frozenset(t for t in TRANSFORMS if t != "encoded")

# A run of number words is read as digits only when it gives at least this many: a phone number
# or an identifier has more, "one or two" and "four five" in prose have fewer.
MIN_SPELLED_DIGITS = 5


def validate_transforms(names: Iterable[str]) -> frozenset[str]:
    """The set of transform names, or ValueError naming the unknown one."""
    chosen = frozenset(names)
    unknown = sorted(chosen - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown text transform {unknown[0]!r}; known: {', '.join(TRANSFORMS)}")
    return chosen


# --------------------------------------------------------------------------------------------
# Character table
# --------------------------------------------------------------------------------------------

# Default-ignorable code points that are not in category Cf (which is deleted whole).
_EXTRA_INVISIBLE = {0x00AD, 0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0}
_EXTRA_INVISIBLE |= set(range(0x180B, 0x1810)) | set(range(0xFE00, 0xFE10))
_DASHES = {0x2212, 0x2043, 0x02D7, 0xFE63, 0xFF0D, 0x2010, 0x2011}
_APOSTROPHES = {0x2019, 0x2018, 0x02BC, 0x00B4, 0x2032, 0xFF07, 0x02B9, 0x201B}
# Letters that carry their mark inside the glyph, so canonical decomposition leaves them alone.
_SPECIAL_LETTERS = {
    "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ħ": "h", "Ħ": "H",
    "ŧ": "t", "Ŧ": "T", "ı": "i", "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE",
    "þ": "th", "Þ": "TH", "ŋ": "n", "Ŋ": "N", "ƒ": "f", "ɫ": "l", "ƚ": "l", "ɨ": "i", "ʉ": "u",
}
# Blocks looked at when the table is built: Latin, Greek, Cyrillic and the other alphabets people
# use to fake Latin letters, punctuation, letter-like symbols, full-width forms, mathematical
# alphanumerics. CJK ideographs, Hangul syllables and private use have nothing to fold.
_RANGES = ((0x80, 0x3400), (0xA000, 0xAC00), (0xF900, 0x10000), (0x10400, 0x10500), (0x1D400, 0x1D800), (0x1F100, 0x1F200))


@lru_cache(maxsize=1)
def _confusable_prototypes() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter or digit it imitates (Unicode confusables data)."""
    from confusable_homoglyphs import confusables

    data = confusables.confusables_data  # char -> [{"c": homoglyph, "n": name}, ...]
    out: dict[str, str] = {}
    for char, glyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        category = unicodedata.category(char)
        for glyph in glyphs:
            base = "".join(c for c in unicodedata.normalize("NFD", glyph["c"]) if not unicodedata.combining(c))
            if len(base) != 1 or not base.isascii() or not base.isalnum():
                continue
            # A letter imitates a letter, a digit a digit: Cyrillic "О" is "O", never "0".
            if category.startswith("L") != base.isalpha():
                continue
            if base == "l" and category == "Lu":
                base = "I"  # the data's skeleton of I is l; a capital that looks like l is an I ("Ι", "І")
            out[char] = base
            break
    return out


def _fold_char(char: str, transforms: frozenset[str], prototypes: dict[str, str]) -> str:
    code = ord(char)
    category = unicodedata.category(char)
    if "invisibles" in transforms and (category == "Cf" or code in _EXTRA_INVISIBLE):
        return ""
    if "separators" in transforms:
        if category == "Zs":
            return " "
        if category == "Pd" or code in _DASHES:
            return "-"
        if code in _APOSTROPHES:
            return "'"
    if "width" in transforms and category == "Nd":
        return str(unicodedata.decimal(char))  # Arabic-Indic, Devanagari, full-width... digits
    out = unicodedata.normalize("NFKC", char) if "width" in transforms else char
    if "diacritics" in transforms:
        decomposed = unicodedata.normalize("NFD", out)
        out = "".join(_SPECIAL_LETTERS.get(c, c) for c in decomposed if not unicodedata.combining(c))
    if "confusables" in transforms:
        out = "".join(prototypes.get(c, c) if not c.isascii() else c for c in out)
    if out != char and "separators" in transforms:
        # NFKC may give a dash or a space of another class ("\u2024" -> "."): unify those too.
        out = "".join(
            " " if unicodedata.category(c) == "Zs" else "-" if unicodedata.category(c) == "Pd" else c for c in out
        )
    return out


@lru_cache(maxsize=16)
def char_table(transforms: frozenset[str]) -> dict[int, str]:
    """code point -> replacement for every character the character transforms change."""
    active = transforms & set(CHAR_TRANSFORMS)
    if not active:
        return {}
    prototypes = _confusable_prototypes() if "confusables" in active else {}
    table: dict[int, str] = {}
    for lo, hi in _RANGES:
        for code in range(lo, hi):
            char = chr(code)
            if unicodedata.category(char) in ("Cn", "Co", "Cs"):
                continue
            folded = _fold_char(char, active, prototypes)
            if folded != char:
                table[code] = folded
    # Combining marks outside the ranges above (rare) still go with "diacritics".
    return table


# --------------------------------------------------------------------------------------------
# Offset map
# --------------------------------------------------------------------------------------------


class _Layer:
    """One rewriting step: pieces of the output, each an unchanged run or a replacement.

    norm_starts[i] / orig_starts[i]: where piece i starts in the output / the input; an unchanged
    piece maps character for character, a replaced piece maps as a whole to its input span.
    """

    __slots__ = ("norm_starts", "orig_starts", "orig_ends", "same")

    def __init__(self) -> None:
        self.norm_starts: list[int] = []
        self.orig_starts: list[int] = []
        self.orig_ends: list[int] = []
        self.same: list[bool] = []

    def add(self, norm_start: int, orig_start: int, orig_end: int, same: bool) -> None:
        self.norm_starts.append(norm_start)
        self.orig_starts.append(orig_start)
        self.orig_ends.append(orig_end)
        self.same.append(same)

    def start(self, position: int) -> int:
        i = bisect.bisect_right(self.norm_starts, position) - 1
        if i < 0:
            return position
        if self.same[i]:
            return self.orig_starts[i] + position - self.norm_starts[i]
        return self.orig_starts[i]

    def end(self, position: int) -> int:
        if position <= 0:
            return 0
        last = position - 1
        i = bisect.bisect_right(self.norm_starts, last) - 1
        if i < 0:
            return position
        if self.same[i]:
            return self.orig_starts[i] + last - self.norm_starts[i] + 1
        return self.orig_ends[i]


def _rewrite(text: str, edits: Iterable[tuple[int, int, str]]) -> tuple[str, _Layer | None]:
    """Apply sorted, non-overlapping (start, end, replacement) edits; None layer when nothing changed."""
    pieces: list[str] = []
    layer = _Layer()
    cursor = 0
    length = 0
    changed = False
    for start, end, replacement in edits:
        if start > cursor:
            layer.add(length, cursor, start, True)
            pieces.append(text[cursor:start])
            length += start - cursor
        layer.add(length, start, end, False)
        pieces.append(replacement)
        length += len(replacement)
        cursor = end
        changed = True
    if not changed:
        return text, None
    if cursor < len(text):
        layer.add(length, cursor, len(text), True)
        pieces.append(text[cursor:])
    return "".join(pieces), layer


@dataclass(frozen=True)
class Normalized:
    """The normalised text and the way back to the original's character offsets."""

    text: str
    original: str
    layers: tuple[_Layer, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.layers)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters [start', end') that the normalised span [start, end) came from."""
        empty = end <= start
        for layer in reversed(self.layers):
            start, end = layer.start(start), layer.end(end)
        return (start, start) if empty else (start, max(start, end))


# --------------------------------------------------------------------------------------------
# Phrase transforms
# --------------------------------------------------------------------------------------------

# Number words after the character transforms (accents already gone: "fünf" is "funf").
_NUMBER_WORDS = {
    # English
    "zero": "0", "oh": "0", "nought": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
    # German
    "null": "0", "eins": "1", "zwei": "2", "zwo": "2", "drei": "3", "vier": "4", "funf": "5", "fuenf": "5",
    "sechs": "6", "sieben": "7", "acht": "8", "neun": "9",
    # French
    "un": "1", "une": "1", "deux": "2", "trois": "3", "quatre": "4", "cinq": "5", "sept": "7",
    "huit": "8", "neuf": "9",
    # Spanish
    "cero": "0", "uno": "1", "dos": "2", "tres": "3", "cuatro": "4", "cinco": "5", "seis": "6",
    "siete": "7", "ocho": "8", "nueve": "9",
}
_REPEATS = {"double": 2, "triple": 3, "doppel": 2, "doble": 2, "triplo": 3}
_NUMBER_TOKEN = "(?:" + "|".join(sorted(map(re.escape, [*_NUMBER_WORDS, *_REPEATS]), key=len, reverse=True)) + r"|\d{1,4})"
_SPELLED_RUN_RE = re.compile(
    rf"(?<![^\W_]){_NUMBER_TOKEN}(?:[ \t,.\-/]{{1,3}}{_NUMBER_TOKEN}){{2,}}(?![^\W_])", re.IGNORECASE
)
_NUMBER_TOKEN_RE = re.compile(_NUMBER_TOKEN, re.IGNORECASE)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})"
_BRACKETED = r"[ \t]{0,3}[\[({<][ \t]{0,2}%s[ \t]{0,2}[\])}>][ \t]{0,3}"
_AT = rf"(?:[ \t]{{0,3}}@[ \t]{{0,3}}|{_BRACKETED % '(?i:at)'}|[ \t]{{1,3}}(?i:at)[ \t]{{1,3}})"
_DOT = rf"(?:\.|{_BRACKETED % '(?i:dot)'}|[ \t]{{1,3}}(?i:dot)[ \t]{{1,3}})"
_OBFUSCATED_EMAIL_RE = re.compile(
    rf"(?<![A-Za-z0-9._%+\-])(?P<local>[A-Za-z0-9%+_\-]+(?:{_DOT}[A-Za-z0-9%+_\-]+){{0,4}})"
    rf"{_AT}(?P<domain>{_LABEL}(?:{_DOT}{_LABEL}){{1,4}})(?![A-Za-z0-9\-])"
)
_DOT_RE = re.compile(_DOT)


def _spelled_digit_edits(text: str) -> list[tuple[int, int, str]]:
    edits: list[tuple[int, int, str]] = []
    for run in _SPELLED_RUN_RE.finditer(text):
        digits: list[str] = []
        words = 0
        repeat = 1
        for token in _NUMBER_TOKEN_RE.findall(run.group()):
            lowered = token.lower()
            if lowered in _REPEATS:
                repeat = _REPEATS[lowered]
                continue
            if lowered in _NUMBER_WORDS:
                digits.append(_NUMBER_WORDS[lowered] * repeat)
                words += 1
            else:
                digits.append(token * repeat)
            repeat = 1
        joined = "".join(digits)
        if words >= 2 and len(joined) >= MIN_SPELLED_DIGITS:
            edits.append((run.start(), run.end(), joined))
    return edits


def _email_edits(text: str) -> list[tuple[int, int, str]]:
    edits: list[tuple[int, int, str]] = []
    for m in _OBFUSCATED_EMAIL_RE.finditer(text):
        written = m.group()
        local = _DOT_RE.sub(".", m.group("local"))
        domain = _DOT_RE.sub(".", m.group("domain"))
        canonical = f"{local}@{domain}"
        if canonical != written:
            edits.append((m.start(), m.end(), canonical))
    return edits


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]+")
# Cheap tests (RE2: a DFA, linear time, ~500 MB/s) that say whether a phrase transform can apply at
# all; the exact (Python) expressions above then run only on the rare text that passes.
_NUMBER_ALTERNATION = "|".join(sorted(map(re.escape, [*_NUMBER_WORDS, *_REPEATS]), key=len, reverse=True))
_SPELLED_HINT = re2.compile(
    rf"(?i)\b(?:{_NUMBER_ALTERNATION})(?:[ \t,.\-/]{{1,3}}(?:{_NUMBER_ALTERNATION}|\d{{1,4}})){{2,}}\b"
)
_EMAIL_HINT = re2.compile(
    r"(?i)[ \t]@|@[ \t]|[\[({<][ \t]{0,2}(?:at|dot)[ \t]{0,2}[\])}>]"
    # The hint must never be narrower than the transform, or a text normalises differently with and
    # without context: a local part may end in any of its characters ("a- at b.c", "x_ at b.c"), a
    # domain label may start with a digit ("0.0" as _LABEL allows), and a spelled dot may sit in the
    # local part as well as the domain ("a dot b@example.com")
    r"|[a-z0-9%+_\-][ \t]{1,3}at[ \t]{1,3}[a-z0-9-]+(?:[ \t]{1,3}dot[ \t]{1,3}|\.[a-z0-9])"
    r"|[a-z0-9%+_\-][ \t]{1,3}dot[ \t]{1,3}[a-z0-9%+_\-]"
)


def normalize(text: str, transforms: frozenset[str] = DEFAULT_TRANSFORMS) -> Normalized:
    """`text` rewritten by the enabled transforms, with its offset map (see the module docstring)."""
    layers: list[_Layer] = []
    current = text
    if not current.isascii():
        table = char_table(transforms)
        if table and current.translate(table) != current:
            edits = [
                (m.start() + i, m.start() + i + 1, table[ord(c)])
                for m in _NON_ASCII_RE.finditer(current)
                for i, c in enumerate(m.group())
                if ord(c) in table
            ]
            current, layer = _rewrite(current, edits)
            if layer is not None:
                layers.append(layer)
    if "spelled_digits" in transforms and _SPELLED_HINT.search(current):
        current, layer = _rewrite(current, _spelled_digit_edits(current))
        if layer is not None:
            layers.append(layer)
    if "at_dot" in transforms and _EMAIL_HINT.search(current):
        current, layer = _rewrite(current, _email_edits(current))
        if layer is not None:
            layers.append(layer)
    return Normalized(text=current, original=text, layers=tuple(layers))


def fold_chars(text: str, transforms: frozenset[str] = DEFAULT_TRANSFORMS) -> str:
    """The character transforms only, without an offset map (for keys and for the scan's pre-filter)."""
    if text.isascii():
        return text
    table = char_table(transforms)
    return text.translate(table) if table else text
