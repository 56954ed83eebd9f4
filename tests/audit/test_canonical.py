"""Canonical JSON: one byte string per value, everything else refused with the key path named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proofs.canonical import (
    canonical_bytes,
    canonical_json_document,
    parse_canonical,
    parse_canonical_document,
    parse_rfc3339_utc,
    rfc3339_utc,
)


def test_keys_sorted_no_whitespace_utf8_raw() -> None:
    leaf = {
        "type": "request.received",
        "actor": "system",
        "n": 12,
        "tags": ["b", "a"],
        "z": {"y": "é", "x": -3},
    }
    assert canonical_bytes(leaf) == (
        '{"actor":"system","n":12,"tags":["b","a"],"type":"request.received","z":{"x":-3,"y":"é"}}'.encode()
    )


def test_control_characters_and_quotes_are_escaped_the_json_way() -> None:
    assert canonical_bytes({"a": 'q"\\\n'}) == b'{"a":"q\\"\\\\\\n"}'


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"a": 1.5}, r"\$\.a", "floats"),
        ({"a": {"b": [1, True]}}, r"\$\.a\.b\[1\]", "booleans"),
        ({"a": None}, r"\$\.a", "null"),
        ({"a": 2**53}, r"\$\.a", "2\\*\\*53"),
        ({"a": b"x"}, r"\$\.a", "bytes"),
        ({"a": "\ud800"}, r"\$\.a", "surrogate"),
        ({1: "x"}, r"\$", "keys must be strings"),
    ],
)
def test_disallowed_values_name_their_path(value: dict, path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"{path}.*{reason}"):
        canonical_bytes(value)


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="object"):
        canonical_bytes(["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"b":1,"a":2}',  # key order
        b'{"a": 1}',  # whitespace
        b'{"a":1}\n',  # trailing newline
        b'{"a":"\\u00e9"}',  # escaped where the canonical form writes the character
        b'{"a":"\\/"}',  # optional escape
        b'{"a":1,"a":1}',  # duplicate key
        b'{"a":1.0}',  # float
        b'{"a":1e3}',  # exponent
        b'{"a":-0}',  # negative zero is not how 0 is written
        b'{"a":true}',  # literal
        b'{"a":NaN}',
        b'["a"]',  # not an object
        b'{"a":"\xff"}',  # not UTF-8
        b'{"a":"\\ud800"}',  # lone surrogate
        b"",
    ],
)
def test_parse_rejects_non_canonical_bytes(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_canonical(raw)


def test_document_variant_allows_literals_but_not_floats() -> None:
    doc = {"passed": True, "legal_code": None, "score": "0.031"}
    raw = canonical_json_document(doc)
    assert raw == b'{"legal_code":null,"passed":true,"score":"0.031"}'
    assert parse_canonical_document(raw) == doc
    with pytest.raises(ValueError, match="floats"):
        canonical_json_document({"score": 0.031})
    with pytest.raises(ValueError, match="booleans"):
        parse_canonical(raw)


json_values = st.recursive(
    st.text(max_size=8) | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_round_trip_is_byte_exact(value: dict) -> None:
    raw = canonical_bytes(value)
    assert parse_canonical(raw) == value
    assert canonical_bytes(parse_canonical(raw)) == raw


def test_rfc3339_is_fixed_width_utc() -> None:
    moment = datetime(2025, 1, 31, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339_utc(moment) == "2025-01-31T09:30:00.000000Z"
    assert parse_rfc3339_utc("2025-01-31T09:30:00Z") == moment.astimezone(UTC)
    with pytest.raises(ValueError):
        rfc3339_utc(datetime(2025, 1, 31))
    with pytest.raises(ValueError):
        parse_rfc3339_utc("2025-01-31T09:30:00")
