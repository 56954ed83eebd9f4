"""The scan's view of the matcher: every written form of the subject matches, look-alikes do not."""

from __future__ import annotations

import pytest

from pii.matcher import SubjectFinder
from pii.subjects import SubjectIdentifiers, build_subject_anchors


def kinds(subject: SubjectIdentifiers, text: str) -> set[str]:
    return {kind for kind, _, _ in SubjectFinder.for_subject(subject).match(text)}


@pytest.mark.parametrize(
    "text",
    [
        "Ada Quartermaine wrote in.",
        "ADA QUARTERMAINE wrote in.",
        "ada   quartermaine wrote in.",
        "Ada\nQuartermaine wrote in.",
        "Quartermaine, Ada wrote in.",
        "QUARTERMAINE Ada wrote in.",
        "Signed: A. Quartermaine",
        "Signed: A Quartermaine",
        "Signed: A.Quartermaine",
        "Quartermaine, A. (account holder)",
        "Ada B. Quartermaine wrote in.",
    ],
)
def test_name_variants_match(ada: SubjectIdentifiers, text: str) -> None:
    assert kinds(ada, text) == {"name"}


@pytest.mark.parametrize(
    "text",
    [
        "Ada said the build was green.",  # first name alone
        "The Quartermaine file is closed.",  # surname alone
        "Ada Brombury and Ivo Quartermaine met.",  # same first name, same surname, other people
        "Ada Quartermayne wrote in.",  # one letter off
        "Ada Quartermaines wrote in.",  # longer token
        "Adam Quartermaine wrote in.",  # first name is a prefix
        "We met a Quartermaine at the fair.",  # the article is not an initial
        "Posted by Paric A. Quartermaine.",  # someone else's middle initial
        "Ada told Quartermaine nothing.",
        "Account holder Ivo Quartermaine. A note follows.",  # a sentence end is not "Quartermaine, A."
    ],
)
def test_look_alikes_do_not_match(ada: SubjectIdentifiers, text: str) -> None:
    assert kinds(ada, text) == set()


def test_accented_name_matches_with_and_without_accents() -> None:
    zoe = SubjectIdentifiers(full_name="Zoë Brontë")
    assert kinds(zoe, "Zoë Brontë called.") == {"name"}
    assert kinds(zoe, "ZOË BRONTË called.") == {"name"}
    assert kinds(zoe, "Zoe Bronte called.") == {"name"}
    assert kinds(zoe, "Zoe Bronze called.") == set()


@pytest.mark.parametrize(
    "text",
    ["mail ada.quartermaine12@example.com now", "mail ADA.QUARTERMAINE12@EXAMPLE.COM.", "<Ada.Quartermaine12@Example.com>"],
)
def test_email_matches_case_insensitively(ada: SubjectIdentifiers, text: str) -> None:
    assert kinds(ada, text) == {"email"}


@pytest.mark.parametrize(
    "text",
    [
        "xada.quartermaine12@example.com",  # longer local part: another address
        "ada.quartermaine12@example.com.au",  # another domain
        "ada.quartermaine13@example.com",
    ],
)
def test_other_emails_do_not_match(ada: SubjectIdentifiers, text: str) -> None:
    assert kinds(ada, text) == set()


@pytest.mark.parametrize(
    "text",
    [
        "call 415-555-0143",
        "call (415) 555-0143",
        "call 415.555.0143",
        "call +1 415 555 0143",
        "call 4155550143",
        "call 1 (415) 555 0143 after six",
        "call +1-415-555-0143.",
    ],
)
def test_phone_formats_match(ada: SubjectIdentifiers, text: str) -> None:
    found = SubjectFinder.for_subject(ada).match(text)
    assert [k for k, _, _ in found] == ["phone"]
    kind, start, end = found[0]
    assert text[start:end].endswith("0143")


@pytest.mark.parametrize(
    "text",
    ["call 415-555-0144", "ref 41555501431", "order 415-555-01435", "call 555-0143"],
)
def test_other_numbers_do_not_match_the_phone(ada: SubjectIdentifiers, text: str) -> None:
    assert kinds(ada, text) == set()


@pytest.mark.parametrize(
    "text",
    ["SSN 123-45-6780", "SSN 123456780", "SSN 123 45 6780", "IBAN gb29nwbk60161331926819", "IBAN GB29-NWBK-6016-1331-9268-19"],
)
def test_identifiers_match_on_letters_and_digits(ada: SubjectIdentifiers, text: str) -> None:
    assert kinds(ada, text) == {"identifier"}


def test_identifier_inside_a_longer_number_does_not_match(ada: SubjectIdentifiers) -> None:
    assert kinds(ada, "ref 91234567801") == set()


def test_subject_needs_a_searchable_identifier() -> None:
    with pytest.raises(ValueError, match="needs a full name of at least two words"):
        SubjectIdentifiers(full_name="Ada").require_searchable()
    with pytest.raises(ValueError, match="emails"):
        SubjectIdentifiers(full_name="Ada Quartermaine", emails=("not-an-address",))
    with pytest.raises(ValueError, match="phones"):
        SubjectIdentifiers(full_name="Ada Quartermaine", phones=("12-34",))
    with pytest.raises(ValueError, match="sequence of strings"):
        SubjectIdentifiers(full_name="Ada Quartermaine", emails="ada@example.com")  # type: ignore[arg-type]


def test_validation_messages_do_not_echo_the_value() -> None:
    with pytest.raises(ValueError) as excinfo:
        SubjectIdentifiers(full_name="Ada Quartermaine", emails=("secret-value",))
    assert "secret-value" not in str(excinfo.value)


def test_mononym_matches_only_through_other_identifiers() -> None:
    subject = SubjectIdentifiers(full_name="Madonna", emails=("m@example.com",))
    assert kinds(subject, "Madonna sang.") == set()
    assert kinds(subject, "write to m@example.com") == {"email"}


def test_anchors_cover_every_written_form(ada: SubjectIdentifiers) -> None:
    # The pre-filter looks only for anchors: each form the matcher accepts must contain one.
    matcher = build_subject_anchors(ada)
    import re

    for text in ("Quartermaine, Ada", "A. QUARTERMAINE", "ADA.QUARTERMAINE12@EXAMPLE.COM"):
        lowered = text.encode().lower()
        assert any(anchor in lowered for anchor in matcher.literal_anchors), text
    for text in ("(415) 555-0143", "4155550143", "123 45 6780", "GB29 NWBK 6016 1331 9268 19"):
        lowered = text.encode().lower()
        assert any(re.search(src, lowered) for _, src in matcher.regex_anchors), text


def test_usable_keeps_valid_values_drops_and_counts_the_rest() -> None:
    subject, dropped = SubjectIdentifiers.usable(
        full_name="  Ada Quartermaine ", emails=["ada@example.com", "ada at example", " "],
        phones=["020 7946 0018", "12-34", ""], other_identifiers=["AB1234567", "  "],
    )
    assert subject == SubjectIdentifiers("Ada Quartermaine", ("ada@example.com",), ("020 7946 0018",), ("AB1234567",))
    assert dropped == 2  # blanks are not values; the bad e-mail and the short phone are
    assert [len(p.emails) + len(p.phones) + len(p.other_identifiers) + bool(p.full_name) for p in subject.single_fields()] == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        SubjectIdentifiers(phones=("12-34",))  # the strict constructor still refuses
