"""Pure PII library: offline Presidio set-up, the identifier matcher, corpus scanning, PII Risk Index.

No Django, no environment reads: everything takes explicit config objects. Names are imported lazily
(PEP 562) so that `import pii` stays cheap: Presidio and spaCy (several seconds to import) load only
when the analyzer, the scanner or the anonymiser is first used; the PRI needs neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "EngineConfig": "pii.engine",
    "PiiAnalyzer": "pii.engine",
    "build_analyzer": "pii.engine",
    "SubjectIdentifiers": "pii.identifiers",
    "MatchOptions": "pii.matcher",
    "find_matches": "pii.matcher",
    "CorpusSpec": "pii.scan",
    "EntitySpan": "pii.scan",
    "LocatedRecord": "pii.scan",
    "ScanReport": "pii.scan",
    "ScanResult": "pii.scan",
    "scan_corpus": "pii.scan",
    "read_record": "pii.scan",
    "decode_line": "pii.scan",
    "json_record": "pii.scan",
    "PriPolicy": "pii.pri",
    "PriScore": "pii.pri",
    "score_record": "pii.pri",
    "score_request": "pii.pri",
    "AnonymizedRecord": "pii.anonymize",
    "anonymize_record": "pii.anonymize",
    "anonymize_text": "pii.anonymize",
}

__all__ = [
    "AnonymizedRecord",
    "CorpusSpec",
    "EngineConfig",
    "EntitySpan",
    "LocatedRecord",
    "PiiAnalyzer",
    "PriPolicy",
    "PriScore",
    "ScanReport",
    "ScanResult",
    "SubjectIdentifiers",
    "anonymize_record",
    "anonymize_text",
    "build_analyzer",
    "decode_line",
    "json_record",
    "read_record",
    "scan_corpus",
    "score_record",
    "score_request",
    "MatchOptions",
    "find_matches",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from pii.anonymize import AnonymizedRecord, anonymize_record, anonymize_text
    from pii.engine import EngineConfig, PiiAnalyzer, build_analyzer
    from pii.identifiers import SubjectIdentifiers
    from pii.matcher import MatchOptions, find_matches
    from pii.pri import PriPolicy, PriScore, score_record, score_request
    from pii.scan import (
        CorpusSpec,
        EntitySpan,
        LocatedRecord,
        ScanReport,
        ScanResult,
        decode_line,
        json_record,
        read_record,
        scan_corpus,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pii' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
