"""Canonical JSON for audit leaves and certificates (pure: no Django).

Audit leaves (`canonical_bytes` / `parse_canonical`). A leaf is a JSON object serialised as:

- keys sorted by Unicode code point, no insignificant whitespace (`","` and `":"` separators);
- UTF-8, non-ASCII characters written as themselves (no `\\u` escapes other than the ones JSON
  requires for control characters, quote and backslash);
- values restricted to strings, integers (within +/- 2**53 - 1 so that every JSON implementation,
  JavaScript included, reads the same number), lists and nested objects. Floats have no single
  textual form across languages; booleans and null invite "absent vs false" ambiguity in a log that
  is meant to be re-verified for years. Offending values raise ValueError naming their key path.

The bytes are the leaf: they are hashed and stored as they are and never re-serialised. Because the
encoding is a function of the value, "is canonical" is decided by re-serialising and comparing bytes.

Certificates (`canonical_json_document` / `parse_canonical_document`). Same byte rules, but booleans
and null are allowed, because a certificate payload states facts such as `"passed": true` and
`"legal_code": null` that are clearer as JSON literals than as strings. Floats are still refused:
measured values (attack scores, thresholds) are carried as decimal strings written with Python's
shortest round-trip repr, so every verifier compares the exact digits that were signed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1


def _check(value: Any, path: str, allow_literals: bool) -> None:
    # bool is a subclass of int, so it must be tested first.
    if isinstance(value, bool) or value is None:
        if allow_literals:
            return
        raise ValueError(f"{path}: booleans and null are not allowed in canonical audit JSON")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{path}: string is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"{path}: integer outside +/- 2**53 - 1")
        return
    if isinstance(value, float):
        raise ValueError(f"{path}: floats are not allowed in canonical JSON (use a decimal string)")
    if isinstance(value, list | tuple):
        for position, item in enumerate(value):
            _check(item, f"{path}[{position}]", allow_literals)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: object keys must be strings (got {type(key).__name__})")
            _check(key, f"{path}.{key}", allow_literals)
            _check(item, f"{path}.{key}", allow_literals)
        return
    raise ValueError(f"{path}: type {type(value).__name__} is not allowed in canonical JSON")


def _dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    """The canonical leaf bytes of an audit event (an object of strings, integers, lists, objects)."""
    if not isinstance(obj, dict):
        raise ValueError("$: an audit leaf must be a JSON object")
    _check(obj, "$", allow_literals=False)
    return _dump(obj)


def canonical_json_document(obj: dict[str, Any]) -> bytes:
    """Canonical bytes of a certificate payload: as `canonical_bytes`, plus booleans and null."""
    if not isinstance(obj, dict):
        raise ValueError("$: a canonical document must be a JSON object")
    _check(obj, "$", allow_literals=True)
    return _dump(obj)


MAX_DEPTH = 64  # no document the service reads nests deeper than about 8


class JSONLimitError(ValueError):
    """JSON beyond the service's limits (nesting, integer length): refused with this error, never with
    a RecursionError or an unhandled ValueError from deep inside the parser."""


def loads_limited(text: str | bytes, *, max_depth: int = MAX_DEPTH, **options: Any) -> Any:
    """json.loads for untrusted input: JSONDecodeError for malformed text (as json.loads), JSONLimitError
    for nesting deeper than `max_depth` or an integer over Python's 4,300-digit conversion limit."""
    try:
        value = json.loads(text, **options)
    except RecursionError:
        raise JSONLimitError(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise JSONLimitError("JSON holds an integer with too many digits") from None
        raise
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: the depth check itself must not recurse
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise JSONLimitError(f"JSON nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


def _reject_float(text: str) -> Any:
    raise ValueError("floats are not allowed in canonical JSON")


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def _parse(data: bytes, allow_literals: bool) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError("canonical JSON must be given as bytes")
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 at byte {exc.start}") from None
    try:
        # No object_pairs_hook: a duplicate key survives parsing only once, so the re-serialised
        # bytes below differ from the input and duplicates are refused anyway, while the C parser
        # keeps its fast path (audit_verify parses every leaf of the log).
        value = loads_limited(text, parse_float=_reject_float, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, dict):
        raise ValueError("canonical JSON must be an object")
    _check(value, "$", allow_literals)
    if _dump(value) != raw:
        raise ValueError("JSON is valid but not canonical (key order, whitespace or escaping differ)")
    return value


def parse_canonical(data: bytes) -> dict[str, Any]:
    """Parse audit leaf bytes, rejecting anything that `canonical_bytes` would not have produced."""
    return _parse(data, allow_literals=False)


def parse_canonical_document(data: bytes) -> dict[str, Any]:
    """Parse certificate payload bytes, rejecting anything `canonical_json_document` would not produce."""
    return _parse(data, allow_literals=True)


def rfc3339_utc(moment: datetime) -> str:
    """`2025-01-31T09:30:00.000000Z`: aware datetime in UTC with microseconds, one fixed width."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339_utc(text: str) -> datetime:
    """Parse an RFC 3339 timestamp that names its offset (Z or +hh:mm); naive times are refused."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError("timestamp must be an RFC 3339 string such as 2025-01-31T09:30:00Z")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("timestamp must be an RFC 3339 string such as 2025-01-31T09:30:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset (Z or +hh:mm)")
    return moment.astimezone(UTC)
