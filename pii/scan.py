"""Corpus scanning: find every record of one or more data subjects in JSONL or text corpora.

Two stages, so that Presidio (milliseconds per record) runs on a handful of records, not on all:

1. **Pre-filter** (`pii.prefilter.Prefilter`), one streaming pass over raw bytes in chunks of `block_bytes`:
   the whole lines of each chunk are lower-cased (ASCII) once and searched with one RE2 automaton
   for every anchor of every subject (`pii.subjects`); blocks with non-ASCII characters or JSON
   `\\u` escapes are searched again with their characters folded (`pii.textnorm`). A hit marks its
   line a candidate. Memory is bounded by about 3 x `block_bytes` + `max_line_bytes`, whatever the
   file size.
2. **Confirmation**: each candidate line is decoded (JSON: the `text_field`) and the identifier
   matcher (`pii.matcher`, the same as the inference guard's) looks for every subject of the pass in
   the text itself (normalised, word boundaries); only for a located record the configured
   `PiiAnalyzer` lists every PII entity of the record for the PRI and for anonymisation.

Integrity counters (`ScanReport`), each counted and never fatal: malformed JSON lines, non-UTF-8
lines, lines over `max_line_bytes` (skipped, not scanned: the report says how many), records whose
text field is missing. JSON validity (`CorpusSpec.validate_json`): "structural" (default) checks
every line in bulk (starts with "{", ends with "}"; two C-speed counts per block) and parses
suspect lines and every candidate; "all" parses every line (exact, about 80 MB/s); "candidates"
parses candidates only. A malformed line that mentions the subject is still located (its text is
the raw line, `parse_error=True`): a syntax error must not hide a record from an erasure.

Located records hold positions and entity spans, never text (they are safe to log and to store next to
the encrypted record); `read_record` re-reads a record's text by its byte offset.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pii.matcher import MatchOptions, PlainIndex, find_matches
from pii.prefilter import Prefilter
from pii.subjects import GENERIC_ENTITY_BY_KIND, SubjectIdentifiers, build_subject_anchors
from pii.textnorm import DEFAULT_TRANSFORMS, validate_transforms

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus is and how its records are written.

    paths: the files, scanned in order. format: "jsonl" (one JSON object per line; text in
    `text_field`, record id in `id_field`, falling back to "file:line") or "text" (record = line,
    id = "file:line"). max_line_bytes: longer lines are skipped and counted; they bound memory.
    block_bytes: read size; 1 MiB keeps a block and its lower-cased copy in cache across the passes.
    validate_json: see the module docstring. min_entity_score: Presidio results under this score are
    not listed (the pattern recognizers give 0.05-0.3 to bare digit runs).
    """

    paths: tuple[Path, ...]
    format: Literal["jsonl", "text"] = "jsonl"
    text_field: str = "text"
    id_field: str | None = "id"
    max_line_bytes: int = 1 << 20
    name: str = "corpus"
    block_bytes: int = 1 << 20
    validate_json: Literal["candidates", "structural", "all"] = "structural"
    min_entity_score: float = 0.3
    transforms: frozenset[str] = DEFAULT_TRANSFORMS

    def __post_init__(self) -> None:
        if isinstance(self.paths, str | Path):
            raise ValueError("CorpusSpec.paths must be a sequence of paths, not one path")
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        if not self.paths:
            raise ValueError("CorpusSpec.paths must name at least one file")
        if self.format not in ("jsonl", "text"):
            raise ValueError("CorpusSpec.format must be 'jsonl' or 'text'")
        if not self.text_field:
            raise ValueError("CorpusSpec.text_field must be non-empty")
        if self.max_line_bytes < 64:
            raise ValueError("CorpusSpec.max_line_bytes must be at least 64")
        if self.block_bytes < 4096:
            raise ValueError("CorpusSpec.block_bytes must be at least 4096")
        if self.validate_json not in ("candidates", "structural", "all"):
            raise ValueError("CorpusSpec.validate_json must be 'candidates', 'structural' or 'all'")
        if not 0.0 <= self.min_entity_score <= 1.0:
            raise ValueError("CorpusSpec.min_entity_score must be within [0, 1]")
        object.__setattr__(self, "transforms", validate_transforms(self.transforms))


@dataclass(frozen=True)
class EntitySpan:
    """One PII entity in a record's text: Presidio type, character span, score, who found it."""

    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str


def detect_entities(analyzer: Any, text: str, *, min_score: float = 0.3) -> tuple[EntitySpan, ...]:
    """Every PII entity the analyzer (a `PiiAnalyzer`) finds in `text` at `min_score` or more, in text
    order: what the scanner lists for a located record, and what the worker marks in its retain sample."""
    results = analyzer.analyze(text, score_threshold=min_score)
    spans = [
        EntitySpan(r.entity_type, r.start, r.end, round(float(r.score), 4), _recognizer_name(r))
        for r in results
    ]
    emails = [(s.start, s.end) for s in spans if s.entity_type == "EMAIL_ADDRESS"]
    # Presidio's URL recognizer also reports the domain inside an e-mail address.
    spans = [
        s
        for s in spans
        if not (s.entity_type == "URL" and any(lo <= s.start and s.end <= hi for lo, hi in emails))
    ]
    return tuple(sorted(spans, key=lambda s: (s.start, s.end, s.entity_type)))


@dataclass(frozen=True)
class LocatedRecord:
    """A record that mentions a subject. No text: positions only (see `read_record`)."""

    corpus: str
    file: str
    record_id: str
    line_number: int  # 1-based
    byte_offset: int  # of the line's first byte in `file`
    byte_length: int  # without the line terminator
    subject_index: int  # position of the subject in the list given to scan_corpus
    matched_kinds: tuple[str, ...]  # "name", "email", "phone", "identifier"
    identifier_spans: tuple[tuple[str, int, int], ...]  # (kind, start, end) in the text
    entities: tuple[EntitySpan, ...]
    # True when the line was not valid JSON: the record's text is then the raw line.
    parse_error: bool = False

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(sorted({e.entity_type for e in self.entities}))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["entity_types"] = list(self.entity_types)
        return data


@dataclass
class ScanReport:
    """What the scan read and what it could not read. Every anomaly is counted, none is fatal."""

    files: int = 0
    bytes_total: int = 0
    bytes_read: int = 0
    records_read: int = 0
    blank_lines: int = 0
    candidate_records: int = 0  # distinct lines the pre-filter flagged (for any subject)
    confirmed_records: int = 0  # distinct records confirmed for at least one subject
    malformed_json_lines: int = 0
    missing_text_field: int = 0
    non_utf8_lines: int = 0
    oversize_lines: int = 0
    max_line_bytes: int = 0
    elapsed_s: float = 0.0
    confirm_s: float = 0.0  # time in decoding + the matcher + Presidio
    entities_s: float = 0.0  # of which Presidio listing every PII entity of the located records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def throughput_mb_s(self) -> float:
        return self.bytes_read / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class ScanResult:
    """Located records per subject (same order as the subjects given) and the report."""

    located: tuple[tuple[LocatedRecord, ...], ...]
    report: ScanReport
    analyzer_description: dict[str, Any] = field(default_factory=dict)

    def for_subject(self, index: int) -> tuple[LocatedRecord, ...]:
        return self.located[index]


@dataclass
class _Candidate:
    start: int
    end: int


class _Scanner:
    def __init__(
        self,
        spec: CorpusSpec,
        subjects: Sequence[SubjectIdentifiers],
        analyzer: Any,
        progress: ProgressCallback | None,
    ) -> None:
        self.spec = spec
        self.analyzer = analyzer
        self.progress = progress
        self.prefilter = Prefilter([build_subject_anchors(s) for s in subjects], spec.transforms)
        # One index for every subject of the pass: a candidate line is matched once, whoever it names.
        self.index = PlainIndex.build((str(i), s) for i, s in enumerate(subjects))
        self.options = MatchOptions(transforms=spec.transforms, names="any_case", strict_initials=True)
        self.report = ScanReport(max_line_bytes=spec.max_line_bytes)
        self.located: list[list[LocatedRecord]] = [[] for _ in subjects]

    # 1. Stream one file in chunks. The whole lines of a chunk are scanned in place (as the range
    #    [first newline + 1, last newline + 1)) so that no chunk is ever copied; the line cut by a
    #    chunk boundary is re-joined from the carry and scanned on its own. Lines over the limit
    #    are counted and dropped as they stream, which bounds memory.
    def scan_file(self, path: Path) -> None:
        spec = self.spec
        carry = b""  # the start of a line cut by the previous chunk boundary
        carry_offset = 0  # file offset of carry[0]
        line_number = 0  # lines completed so far in this file
        skipping = False  # inside an oversize line, dropping bytes until its newline
        offset = 0  # file offset of the next chunk
        with path.open("rb") as handle:
            while True:
                chunk = handle.read(spec.block_bytes)
                chunk_offset = offset
                offset += len(chunk)
                self.report.bytes_read += len(chunk)
                if not chunk:
                    if carry and not skipping:  # last line without a final newline
                        last = carry + b"\n"
                        line_number = self.scan_block(
                            path, last, last.lower(), last.isascii(), carry_offset, 0, len(last), line_number
                        )
                    break
                first_newline = chunk.find(b"\n")
                if first_newline == -1:
                    if not skipping:
                        if not carry:
                            carry_offset = chunk_offset
                        carry += chunk
                        if len(carry) > spec.max_line_bytes:
                            self.report.oversize_lines += 1
                            carry, skipping = b"", True
                    self._progress()
                    continue
                # The line that ends at first_newline: finish it (or finish skipping it).
                lo = first_newline + 1
                if skipping:
                    skipping = False
                    line_number += 1
                elif carry:
                    joined = carry + chunk[: first_newline + 1]
                    if len(joined) - 1 > spec.max_line_bytes:
                        self.report.oversize_lines += 1
                        line_number += 1
                    else:
                        line_number = self.scan_block(
                            path, joined, joined.lower(), joined.isascii(), carry_offset, 0, len(joined), line_number
                        )
                    carry = b""
                else:
                    lo = 0  # the chunk starts on a line boundary: its first line is whole
                last_newline = chunk.rfind(b"\n")
                if last_newline + 1 > lo:
                    line_number = self.scan_block(
                        path, chunk, chunk.lower(), chunk.isascii(), chunk_offset, lo, last_newline + 1, line_number
                    )
                carry, carry_offset = chunk[last_newline + 1 :], chunk_offset + last_newline + 1
                if len(carry) > spec.max_line_bytes:
                    self.report.oversize_lines += 1
                    carry, skipping = b"", True
                self._progress()
        self._progress()

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self.report.bytes_read, self.report.bytes_total)

    # 2. The whole lines in block[lo:hi] (hi is just past a newline): bulk integrity counts, the
    #    pre-filter, then confirmation of the candidates.
    def scan_block(
        self,
        path: Path,
        block: bytes,
        lowered: bytes,
        is_ascii: bool,
        block_offset: int,
        lo: int,
        hi: int,
        line_number: int,
    ) -> int:
        spec = self.spec
        n_lines = block.count(b"\n", lo, hi)
        oversize = self._oversize_ranges(block, lo, hi)
        self.report.oversize_lines += len(oversize)

        malformed_starts: set[int] = set()
        if spec.format == "jsonl" and spec.validate_json != "candidates":
            malformed_starts, blank = self._check_json_lines(block, lo, hi, oversize, n_lines)
        else:
            blank = block.count(b"\n\n", lo, hi) + (1 if block.startswith(b"\n", lo) else 0)
        self.report.blank_lines += blank
        self.report.records_read += n_lines - blank - len(oversize)
        self.report.malformed_json_lines += len(malformed_starts)
        if not is_ascii:
            self._count_non_utf8(block, lo, hi)

        candidates: dict[int, _Candidate] = {}
        fold = not is_ascii or lowered.find(b"\\u", lo, hi) != -1
        for start in self.prefilter.lines(lowered, lo, hi, fold):
            end = block.find(b"\n", start, hi)
            candidates[start] = _Candidate(start, hi - 1 if end == -1 else end)

        if candidates:
            started = time.perf_counter()
            counted_to, lines_before = lo, line_number
            for start in sorted(candidates):
                candidate = candidates[start]
                lines_before += block.count(b"\n", counted_to, start)
                counted_to = start
                if any(a <= start < b for a, b in oversize):
                    continue
                self.report.candidate_records += 1
                self._confirm(path, block, block_offset, candidate, lines_before + 1, start in malformed_starts)
            self.report.confirm_s += time.perf_counter() - started
        return line_number + n_lines

    def _oversize_ranges(self, block: bytes, lo: int, hi: int) -> list[tuple[int, int]]:
        """(start, end) of lines longer than max_line_bytes in block[lo:hi], without visiting every line.

        Probe windows of half the limit at a stride of half the limit: any line longer than the limit
        contains one whole window, and only a window holding no newline is looked at further.
        """
        limit = self.spec.max_line_bytes
        if hi - lo <= limit:
            return []
        half = max(1, limit // 2)
        ranges: list[tuple[int, int]] = []
        probe = lo
        while probe + half <= hi:
            if block.find(b"\n", probe, probe + half) == -1:
                start = block.rfind(b"\n", lo, probe) + 1 or lo
                end = block.find(b"\n", probe, hi)
                if end - start > limit and (not ranges or ranges[-1][0] != start):
                    ranges.append((start, end))
                probe = end + 1
                continue
            probe += half
        return ranges

    def _check_json_lines(
        self, block: bytes, lo: int, hi: int, oversize: list[tuple[int, int]], n_lines: int
    ) -> tuple[set[int], int]:
        """Start offsets of malformed JSON lines in block[lo:hi], and the exact blank-line count.

        validate_json="structural": two bulk counts tell whether every line starts with "{" and ends
        with "}" (then none is parsed here). Otherwise, or with "all", lines are visited one by one.
        """
        if self.spec.validate_json == "structural":
            starts = block.count(b"\n{", lo, hi - 1) + (1 if block.startswith(b"{", lo) else 0)
            ends = block.count(b"}\n", lo, hi)
            if starts == n_lines and ends == n_lines:
                return set(), 0
        malformed: set[int] = set()
        blank = 0
        position = lo
        parse_all = self.spec.validate_json == "all"
        while position < hi:
            end = block.find(b"\n", position, hi)
            line = block[position:end]
            stripped = line.strip()
            if not stripped:
                blank += 1
            elif len(line) > self.spec.max_line_bytes:
                pass  # counted as oversize
            elif parse_all or not (stripped.startswith(b"{") and stripped.endswith(b"}")):
                try:
                    if not isinstance(json.loads(line), dict):
                        malformed.add(position)
                except ValueError:  # JSONDecodeError and UnicodeDecodeError both
                    malformed.add(position)
            position = end + 1
        return malformed, blank

    def _count_non_utf8(self, block: bytes, lo: int, hi: int) -> None:
        try:
            block[lo:hi].decode("utf-8")
            return
        except UnicodeDecodeError:
            pass
        position = lo
        while position < hi:
            end = block.find(b"\n", position, hi)
            if end - position <= self.spec.max_line_bytes:
                try:
                    block[position:end].decode("utf-8")
                except UnicodeDecodeError:
                    self.report.non_utf8_lines += 1
            position = end + 1

    def _confirm(
        self,
        path: Path,
        block: bytes,
        block_offset: int,
        candidate: _Candidate,
        line_number: int,
        known_malformed: bool,
    ) -> None:
        raw = block[candidate.start : candidate.end]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        line = decode_line(raw)  # a non-UTF-8 line is counted in _count_non_utf8
        default_id = f"{path.name}:{line_number}"
        if self.spec.format == "jsonl":
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                if not known_malformed:
                    self.report.malformed_json_lines += 1
                # The subject's identifiers are in this line whatever its syntax: an erasure must not
                # skip it. Its text is the raw line, flagged so that callers know.
                text, record_id, parse_error = line, default_id, True
            else:
                json_text, record_id, parse_error = self._json_text(record, default_id)
                if json_text is None:
                    return
                text = json_text
        else:
            text, record_id, parse_error = line, default_id, False
        self._locate(path, block_offset, candidate, line_number, raw, text, record_id, parse_error)

    def _json_text(self, record: dict[str, Any], default_id: str) -> tuple[str | None, str, bool]:
        text, record_id = json_record(record, self.spec, default_id)
        if text is None:
            self.report.missing_text_field += 1
            return None, default_id, False
        return text, record_id, False

    def _locate(
        self,
        path: Path,
        block_offset: int,
        candidate: _Candidate,
        line_number: int,
        raw: bytes,
        text: str,
        record_id: str,
        parse_error: bool,
    ) -> None:
        confirmed_any = False
        entities: tuple[EntitySpan, ...] | None = None
        by_subject: dict[int, list[tuple[str, int, int]]] = {}
        for m in find_matches(text, self.index, self.options):
            by_subject.setdefault(int(m.subject_ref), []).append((m.kind, m.start, m.end))
        for subject in sorted(by_subject):
            matches = sorted(set(by_subject[subject]), key=lambda item: (item[1], item[2], item[0]))
            if entities is None:
                entities = self._entities(text)
            confirmed_any = True
            self.located[subject].append(
                LocatedRecord(
                    corpus=self.spec.name,
                    file=str(path),
                    record_id=record_id,
                    line_number=line_number,
                    byte_offset=block_offset + candidate.start,
                    byte_length=len(raw),
                    subject_index=subject,
                    matched_kinds=tuple(sorted({kind for kind, _, _ in matches})),
                    identifier_spans=tuple(matches),
                    entities=self._with_subject_spans(entities, matches),
                    parse_error=parse_error,
                )
            )
        if confirmed_any:
            self.report.confirmed_records += 1

    def _entities(self, text: str) -> tuple[EntitySpan, ...]:
        started = time.perf_counter()
        try:
            return self._analyze(text)
        finally:
            self.report.entities_s += time.perf_counter() - started

    def _analyze(self, text: str) -> tuple[EntitySpan, ...]:
        return detect_entities(self.analyzer, text, min_score=self.spec.min_entity_score)

    @staticmethod
    def _with_subject_spans(
        entities: tuple[EntitySpan, ...], matches: list[tuple[str, int, int]]
    ) -> tuple[EntitySpan, ...]:
        """Add the subject's own matches where no generic recognizer typed the same text.

        Without NER the subject's name is found only by the matcher; a phone in a format
        the phonenumbers library rejects likewise. An identifier takes the type of the generic
        entity overlapping it (SSN, IBAN...), else SUBJECT_IDENTIFIER.
        """
        out = list(entities)
        for kind, start, end in matches:
            overlapping = [e for e in entities if e.start < end and start < e.end]
            generic = GENERIC_ENTITY_BY_KIND[kind]
            if kind == "identifier" and overlapping:
                continue
            if any(e.entity_type == generic for e in overlapping):
                continue
            out.append(EntitySpan(generic, start, end, 1.0, f"Subject{kind.capitalize()}Recognizer"))
        return tuple(sorted(out, key=lambda s: (s.start, s.end, s.entity_type)))


def _recognizer_name(result: Any) -> str:
    metadata = getattr(result, "recognition_metadata", None) or {}
    return str(metadata.get("recognizer_name", ""))


def scan_corpus(
    spec: CorpusSpec,
    subjects: Sequence[SubjectIdentifiers] | SubjectIdentifiers,
    *,
    analyzer: Any = None,
    progress: ProgressCallback | None = None,
) -> ScanResult:
    """Locate every record of each subject in the corpus (one pass for all subjects).

    analyzer: a `PiiAnalyzer` (default: `build_analyzer()`, cached per process). progress: called with
    (bytes done, bytes total) after each block. Missing files raise FileNotFoundError before any
    work; everything inside the files that cannot be read is counted in the report instead.
    """
    subject_list = [subjects] if isinstance(subjects, SubjectIdentifiers) else list(subjects)
    if not subject_list:
        raise ValueError("scan_corpus needs at least one subject")
    if analyzer is None:
        from pii.engine import build_analyzer

        analyzer = build_analyzer()
    for path in spec.paths:
        if not path.is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
    for subject in subject_list:
        subject.require_searchable()
    scanner = _Scanner(spec, subject_list, analyzer, progress)
    scanner.report.files = len(spec.paths)
    scanner.report.bytes_total = sum(p.stat().st_size for p in spec.paths)
    started = time.perf_counter()
    for path in spec.paths:
        scanner.scan_file(path)
    scanner.report.elapsed_s = time.perf_counter() - started
    return ScanResult(
        located=tuple(tuple(records) for records in scanner.located),
        report=scanner.report,
        analyzer_description=getattr(analyzer, "description", {}),
    )


def decode_line(raw: bytes) -> str:
    """A corpus line's text: UTF-8, else cp1252 (a non-UTF-8 line is almost always cp1252/latin-1, and
    read so the subject's name can still be confirmed)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def json_record(record: dict[str, Any], spec: CorpusSpec, default_id: str) -> tuple[str | None, str]:
    """(text, record id) of a parsed JSON-lines record as the scanner names it: its `text_field` (None
    where that is not a string) and its `id_field`, else `default_id` ("file:line")."""
    text = record.get(spec.text_field)
    record_id = default_id
    if spec.id_field is not None and record.get(spec.id_field) not in (None, ""):
        record_id = str(record[spec.id_field])
    return (text if isinstance(text, str) else None), record_id


def read_record(record: LocatedRecord, spec: CorpusSpec) -> str:
    """The text of a located record, re-read from its file by byte offset (for anonymisation)."""
    with open(record.file, "rb") as handle:
        handle.seek(record.byte_offset)
        raw = handle.read(record.byte_length)
    line = decode_line(raw)
    if spec.format == "text" or record.parse_error:
        return line
    value = json.loads(line).get(spec.text_field)
    if not isinstance(value, str):
        raise ValueError(f"record {record.record_id!r} has no text field {spec.text_field!r}")
    return value
