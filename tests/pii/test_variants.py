"""One matcher for scan and guard: every in-scope transform is caught, at the exact original span.

The variants are generated (tests/pii/variant_corpus.py): each holds one identifier of one person,
written through one transform, with its exact span. The same variants go through the corpus scan
(`scan_corpus`, pre-filter included), the anonymiser's finder and the guard (`guard_text` on keyed
hashes): each must find that person at that span.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pii.guard import GuardPolicy, guard_text
from pii.identifiers import SubjectIdentifiers
from pii.matcher import GuardIndex, MatchOptions, PlainIndex, find_matches, rule_hashes
from pii.scan import CorpusSpec, scan_corpus
from pii.textnorm import DEFAULT_TRANSFORMS, TRANSFORMS, normalize
from tests.pii.variant_corpus import WRITERS, Variant, identifiers_of, subjects_and_variants

KEY = b"variant-test-key-0123456789abcdef"
PEOPLE, VARIANTS = subjects_and_variants(12, seed=5)
IN_SCOPE = [v for v in VARIANTS if v.transform != "encoded"]
ENCODED = [v for v in VARIANTS if v.transform == "encoded"]


@pytest.fixture(scope="module")
def guard_index() -> GuardIndex:
    rules = [(p.person_id, r.kind, r.digest_hex) for p in PEOPLE for r in rule_hashes(identifiers_of(p), KEY)]
    return GuardIndex.build(rules, KEY)


@pytest.fixture(scope="module")
def plain_index() -> PlainIndex:
    return PlainIndex.build((p.person_id, identifiers_of(p)) for p in PEOPLE)


def _exact(variant: Variant, matches: list) -> bool:
    return any(m.subject_ref == variant.person_id and (m.start, m.end) == (variant.start, variant.end) for m in matches)


def test_every_transform_has_variants_of_its_own() -> None:
    assert set(WRITERS) == {"plain", "case", *TRANSFORMS} - {"width"} | {"width"}
    for transform in WRITERS:
        assert any(v.transform == transform for v in VARIANTS)


@pytest.mark.parametrize("transform", [t for t in WRITERS if t != "encoded"])
def test_guard_finds_each_transform_at_the_exact_span(transform: str, guard_index: GuardIndex) -> None:
    variants = [v for v in IN_SCOPE if v.transform == transform]
    missed = [v.text for v in variants if not _exact(v, guard_text(v.text, guard_index).matches)]
    assert missed == []
    for v in variants:  # and the redacted text no longer holds the value
        assert v.text[v.start : v.end] not in guard_text(v.text, guard_index).text


@pytest.mark.parametrize("transform", [t for t in WRITERS if t != "encoded"])
def test_scan_matcher_finds_each_transform_at_the_exact_span(transform: str, plain_index: PlainIndex) -> None:
    options = MatchOptions(names="any_case", strict_initials=True)
    variants = [v for v in IN_SCOPE if v.transform == transform]
    assert [v.text for v in variants if not _exact(v, find_matches(v.text, plain_index, options))] == []


def test_corpus_scan_locates_every_variant_record_pre_filter_included(tmp_path: Path) -> None:
    # Written as Python's json writes by default (ensure_ascii: every non-ASCII character escaped)
    # and as UTF-8: the pre-filter must see through both.
    for ensure_ascii in (True, False):
        path = tmp_path / f"variants-{ensure_ascii}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for i, v in enumerate(IN_SCOPE):
                handle.write(json.dumps({"id": f"r{i}", "text": v.text}, ensure_ascii=ensure_ascii) + "\n")
        result = scan_corpus(CorpusSpec(paths=(path,)), [identifiers_of(p) for p in PEOPLE])
        by_id = {p.person_id: i for i, p in enumerate(PEOPLE)}
        for i, v in enumerate(IN_SCOPE):
            located = [r for r in result.for_subject(by_id[v.person_id]) if r.record_id == f"r{i}"]
            assert located, (v.transform, v.kind, ensure_ascii)
            assert any((s, e) == (v.start, v.end) for _, s, e in located[0].identifier_spans), (v.transform, v.kind)


def test_encoded_identifiers_only_with_the_encoded_transform(guard_index: GuardIndex) -> None:
    on = GuardPolicy(transforms=DEFAULT_TRANSFORMS | {"encoded"})
    for v in ENCODED:
        assert guard_text(v.text, guard_index).matches == []  # off by default
        assert _exact(v, guard_text(v.text, guard_index, on).matches), v.text


@pytest.mark.parametrize("transform", ["separators", "width", "invisibles", "confusables", "spelled_digits", "at_dot"])
def test_each_transform_has_a_working_switch(transform: str, guard_index: GuardIndex) -> None:
    # With the transform switched off, at least one of its variants is no longer caught: the switch
    # is real, and the variants really need the transform.
    off = GuardPolicy(transforms=DEFAULT_TRANSFORMS - {transform})
    variants = [v for v in IN_SCOPE if v.transform == transform]
    assert any(not _exact(v, guard_text(v.text, guard_index, off).matches) for v in variants)


def test_diacritics_switch_folds_letters_that_do_not_decompose() -> None:
    # Combining accents are always stripped from name tokens; "ø" and "ƒ" need a transform: the
    # diacritics table, or the confusables data, which also knows them.
    subject = SubjectIdentifiers(full_name="Olaf Lindstrom", phones=("020 7946 0018",))
    index = GuardIndex.build([("s", r.kind, r.digest_hex) for r in rule_hashes(subject, KEY)], KEY)
    text = "Ask Ola\u0192 Lindstr\u00f8m."
    without_confusables = DEFAULT_TRANSFORMS - {"confusables"}
    assert guard_text(text, index, GuardPolicy(transforms=without_confusables)).text == "Ask [removed]."
    assert guard_text(text, index, GuardPolicy(transforms=without_confusables - {"diacritics"})).matches == []


def test_unknown_transform_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown text transform 'rot13'"):
        MatchOptions(transforms=frozenset({"rot13"}))
    with pytest.raises(ValueError, match="names must be one of"):
        MatchOptions(names="sometimes")  # type: ignore[arg-type]


_SPECIALS = "\u2013\u2011\u00a0\u202f\u200b\u200d\u00ad\uff10\uff41\u0430\u043e\u00e9\u00f8\u0142\u00df\u1d400"
_PIECES = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + " .-@", max_size=8),
    st.sampled_from(["five five five one two", " at ", " dot ", "[at]", "zwei drei vier fünf sechs", "@"]),
    st.text(alphabet=_SPECIALS, min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_offsets_map_every_normalised_character_back_to_its_source(text: str) -> None:
    normalized = normalize(text)
    for i in range(len(normalized.text)):
        start, end = normalized.span(i, i + 1)
        assert 0 <= start < end <= len(text)
        # The original characters there normalise to text holding this character.
        assert normalized.text[i] in normalize(text[start:end]).text or not normalized.text[i].strip()
    start, end = normalized.span(0, len(normalized.text))
    assert 0 <= start <= end <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " ,.-()", max_size=60))
def test_ascii_text_without_number_words_or_e_mail_spellings_is_unchanged(text: str) -> None:
    normalized = normalize(text)
    if not normalized.changed:
        assert normalized.text == text and normalized.span(0, len(text)) == (0, len(text))


def test_a_spelled_at_before_a_numeric_domain_normalises_with_and_without_other_hints() -> None:
    """Found by the offset property: the cheap hint skipped "0 AT 0.0" (a label starting with a digit)
    unless another spelling elsewhere in the text woke the transform up."""
    assert normalize("0 AT 0.0").text == "0@0.0"
    assert normalize("0 AT 0.0[at]").text.startswith("0@0.0")


@pytest.mark.parametrize(("written", "canonical"), [
    ("a- at 0.0", "a-@0.0"),  # found by the offset property as "[at]\u2011 AT 0.0": a local part ending in "-"
    ("x_ at example.com", "x_@example.com"),
    ("a dot b@example.com", "a.b@example.com"),  # a spelled dot in the local part
    ("a dot b at example dot com", "a.b@example.com"),
])
def test_every_e_mail_spelling_normalises_on_its_own_as_it_does_beside_another(written: str, canonical: str) -> None:
    """The cheap hint once woke the e-mail transform only for some spellings: these were rewritten when
    another spelling ("[at]") stood elsewhere in the text, and left as written when alone."""
    assert normalize(written).text == canonical
    assert normalize(f"{written} [at]").text.startswith(canonical)
