"""Pure tests of the guard's rules, matching, redaction and cache (no Django)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import threading

import pytest

from pii.guard import GuardCache, GuardPolicy, guard_text
from pii.identifiers import SubjectIdentifiers
from pii.matcher import GuardIndex, keyed_digest, name_keys, rule_hashes
from pii.normalize import phone_digits
from pii.synth import distractors, generate_people
from tests.pii.guard_testset import generate_testset, subject_identifiers, subject_ref_for

KEY = b"test-guard-key-0123456789abcdef"
ADA = SubjectIdentifiers(
    full_name="Ada Quartermaine",
    emails=["Ada.Quartermaine@Example.com"],
    phones=["+44 20 7946 0018"],
    other_identifiers=["123-45-6789", "GB29 NWBK 6016 1331 9268 19", "4111 1111 1111 1111", "K12345678", "MRN-1234567"],
)
ADA_REF = "a" * 32


def index_for(*subjects: tuple[str, SubjectIdentifiers], key: bytes = KEY) -> GuardIndex:
    return GuardIndex.build(
        [(ref, r.kind, r.digest_hex) for ref, ids in subjects for r in rule_hashes(ids, key)], key
    )


@pytest.fixture(scope="module")
def ada_index() -> GuardIndex:
    return index_for((ADA_REF, ADA))


@pytest.mark.parametrize(
    "text",
    [
        "Her number is 020-7946-0018.",
        "Call +44 20 7946 0018 now",
        "Tel: (020) 7946 0018",
        "0044 20 7946 0018",
        "+44 (0)20 7946 0018",
        "Reach me at 02079460018!",
        "Write to ADA.QUARTERMAINE@EXAMPLE.COM please",
        "mail ada.quartermaine@example.com.",
        "The holder is Ada Quartermaine.",
        "QUARTERMAINE, ADA signed it",
        "Quartermaine, Ada signed it",
        "Signed: A. Quartermaine",
        "Ada   Quartermaine was there",
        "Ada Quartermaine's phone",
        "ADA QUARTERMAINE",
        "SSN 123 45 6789",
        "SSN 123456789",
        "IBAN GB29NWBK60161331926819",
        "iban gb29 nwbk 6016 1331 9268 19",
        "card 4111111111111111",
        "card 4111-1111-1111-1111",
        "passport k12345678",
        "record MRN 1234567",
    ],
)
def test_formatting_variants_are_caught_and_redacted(ada_index: GuardIndex, text: str) -> None:
    result = guard_text(text, ada_index, GuardPolicy())
    assert result.matches, text
    assert {m.subject_ref for m in result.matches} == {ADA_REF}
    assert "[removed]" in result.text
    # No trace of the value stays: neither its digits nor the surname.
    digits = phone_digits(result.text)
    for secret in ("79460018", "123456789", "60161331926819", "4111111111111111", "12345678", "1234567"):
        assert secret not in digits
    assert "quartermaine" not in result.text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "Ada asked about her order.",  # first name alone
        "Hello ADA, how are you?",
        "Quartermaine is a surname.",  # surname alone
        "Ada Smith and John Quartermaine met.",  # shares one name each
        "Ada Quartermayne is someone else.",  # one letter off
        "Call 020-7946-0019 instead.",  # one digit off
        "Reference 123-45-6780.",
        "Write to ada.quartermaine@example.org",
        "The year 2019 and the amount 4,111.11.",
    ],
)
def test_other_people_and_near_misses_are_not_flagged(ada_index: GuardIndex, text: str) -> None:
    result = guard_text(text, ada_index, GuardPolicy())
    assert result.matches == []
    assert result.text == text


def test_first_name_alone_never_matches_even_for_a_single_token_name() -> None:
    index = index_for(("b" * 32, SubjectIdentifiers(full_name="Ada", emails=["x@example.com"])))
    assert not any(r.kind == "name" for r in rule_hashes(SubjectIdentifiers(full_name="Ada"), KEY))
    assert guard_text("Ada called.", index).matches == []


def test_distractors_from_synth_are_not_flagged() -> None:
    subjects = generate_people(30, seed=3)
    index = index_for(*((subject_ref_for(p), subject_identifiers(p)) for p in subjects))
    testset = generate_testset(subjects, distractors_per_subject=3, other_people=60, seed=3)
    negatives = [o for o in testset if not o.positive and not o.ambiguous]
    positives = [o for o in testset if o.positive]
    assert len(negatives) > 300 and len(positives) > 800
    flagged = [o.form for o in negatives if guard_text(o.text, index).matches]
    assert flagged == []
    missed = [o.form for o in positives if not any(m.subject_ref == o.subject_ref for m in guard_text(o.text, index).matches)]
    assert missed == []
    # The distractors do share name parts with the subjects: the test is not vacuous.
    shared_first = [d for p in subjects for d in distractors(p, count=3, seed=3) if d.first_name == p.first_name]
    assert shared_first


def test_redact_replaces_each_value_and_keeps_the_rest(ada_index: GuardIndex) -> None:
    text = "Ada Quartermaine (020 7946 0018) wrote to ada.quartermaine@example.com."
    result = guard_text(text, ada_index, GuardPolicy(mode="redact", replacement="<X>"))
    assert result.text == "<X> (<X>) wrote to <X>."
    assert not result.blocked
    assert {m.kind for m in result.matches} == {"name", "phone", "email"}
    for m in result.matches:
        assert 0 <= m.start < m.end <= len(text)


def test_block_withholds_the_whole_output(ada_index: GuardIndex) -> None:
    policy = GuardPolicy(mode="block", block_text="[withheld]")
    result = guard_text("Sure, it is 020 7946 0018.", ada_index, policy)
    assert result.blocked and result.text == "[withheld]"
    clean = guard_text("Nothing to see.", ada_index, policy)
    assert not clean.blocked and clean.text == "Nothing to see."


def test_matches_carry_no_plaintext(ada_index: GuardIndex) -> None:
    result = guard_text("Ada Quartermaine, 020 7946 0018", ada_index)
    for m in result.matches:
        dumped = repr(m).lower()
        assert "quartermaine" not in dumped and "7946" not in dumped


def test_stored_rule_hashes_contain_no_plaintext_identifier() -> None:
    rules = rule_hashes(ADA, KEY)
    stored = " ".join(f"{ADA_REF} {r.kind} {r.digest_hex}" for r in rules).lower()
    values = [ADA.full_name, *ADA.full_name.split(), *ADA.emails, *ADA.phones, *ADA.other_identifiers]
    for value in values:
        for form in {value, value.lower(), phone_digits(value)} - {""}:
            if len(form) >= 4:
                assert form.lower() not in stored
    assert {r.kind for r in rules} == {"name_lc", "email", "phone", "identifier"}  # a distinctive name
    assert all(len(r.digest_hex) == 64 for r in rules)


def test_digest_is_standard_hmac_sha256_over_versioned_message() -> None:
    expected = hmac.new(KEY, b"guard-v1\x1fphone\x1f079460018", hashlib.sha256).hexdigest()
    assert keyed_digest("phone", "079460018", KEY) == expected
    long_key = b"k" * 100  # keys over one block are hashed first, as RFC 2104 says
    assert keyed_digest("name", "a b", long_key) == hmac.new(long_key, b"guard-v1\x1fname\x1fa b", hashlib.sha256).hexdigest()


def test_different_key_matches_nothing() -> None:
    rules = [(ADA_REF, r.kind, r.digest_hex) for r in rule_hashes(ADA, KEY)]
    other_key_index = GuardIndex.build(rules, b"another-key-of-enough-length-000")
    assert guard_text("Ada Quartermaine 020 7946 0018", other_key_index).matches == []


def test_invalid_inputs_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        rule_hashes(ADA, b"short")
    with pytest.raises(ValueError) as info:
        rule_hashes(SubjectIdentifiers(full_name="Ada Quartermaine", phones=["12345"]), KEY)
    assert "12345" not in str(info.value)
    with pytest.raises(ValueError):
        rule_hashes(SubjectIdentifiers(other_identifiers=["AB12"]), KEY)
    with pytest.raises(ValueError):
        GuardIndex.build([(ADA_REF, "ssn", "0" * 64)], KEY)
    with pytest.raises(ValueError):
        GuardIndex.build([(ADA_REF, "name", "xyz")], KEY)
    with pytest.raises(ValueError):
        GuardPolicy(mode="shout")  # type: ignore[arg-type]


def test_name_keys_cover_the_written_forms() -> None:
    assert name_keys("Ada Quartermaine") == {
        "ada quartermaine", "quartermaine ada", "a quartermaine", "quartermaine a",
        *(f"{title} quartermaine" for title in ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame",
                                                 "herr", "frau", "mme", "mlle", "sr", "sra")),
    }
    assert name_keys("Will Brown") == {"will brown", "brown will", "w brown", "brown w"}  # not distinctive: no titles
    assert "c o brien" in name_keys("Ciara O'Brien")  # "C. O'Brien"
    assert "ludwig van beethoven" in name_keys("Ludwig van Beethoven")
    assert name_keys("Ada") == set()


def test_apostrophe_hyphen_and_accent_variants(ada_index: GuardIndex) -> None:
    index = index_for(
        ("c" * 32, SubjectIdentifiers(full_name="Ciara O'Brien")),
        ("d" * 32, SubjectIdentifiers(full_name="Élodie Brûlé")),
        ("e" * 32, SubjectIdentifiers(full_name="Ludwig van Beethoven")),
    )
    for text in ("Ciara O\u2019Brien", "O'Brien, Ciara", "C. O'Brien", "Elodie Brule", "ÉLODIE BRÛLÉ", "Ludwig van Beethoven"):
        assert guard_text(f"Ask {text} about it.", index).matches, text


def test_lower_case_names_by_distinctiveness() -> None:
    # "Ada Quartermaine" is distinctive: matched in any case by default. "Will Brown" is made of
    # common words: only capitalised by default, in any case only when the policy asks for it.
    index = index_for(("a" * 32, ADA), ("b" * 32, SubjectIdentifiers(full_name="Will Brown")))
    assert guard_text("i think ada quartermaine knows", index).text == "i think [removed] knows"
    assert guard_text("i think ada quartermaine knows", index, GuardPolicy(names="capitalised")).matches == []
    assert guard_text("you will brown the onions", index).matches == []
    assert guard_text("Will Brown called", index).text == "[removed] called"
    assert guard_text("you will brown the onions", index, GuardPolicy(lowercase_names=True)).matches != []


def test_context_catches_a_value_split_between_prompt_and_output(ada_index: GuardIndex) -> None:
    result = guard_text(" Quartermaine lives here.", ada_index, context="Tell me about Ada")
    assert result.text == "[removed] lives here."
    # A value wholly in the prompt is not the output's doing.
    assert guard_text("She is nice.", ada_index, context="Ada Quartermaine").matches == []


def test_several_phones_in_one_digit_run(ada_index: GuardIndex) -> None:
    result = guard_text("Numbers: 202 555 0143 020 7946 0018 303 555 0199", ada_index)
    assert len(result.matches) == 1
    assert "7946" not in result.text and "0143" in result.text and "0199" in result.text


def test_cache_swaps_index_and_keeps_last_good_one_when_the_loader_fails() -> None:
    clock = iter(range(100, 200))
    cache = GuardCache(key=KEY, clock=lambda: float(next(clock)))
    assert cache.health().healthy is False and cache.index.rule_count == 0
    rules = [(ADA_REF, r.kind, r.digest_hex) for r in rule_hashes(ADA, KEY)]
    assert cache.refresh(lambda: ("v1", rules)) is True
    assert cache.guard("Ada Quartermaine").matches
    calls = []

    def same_version() -> tuple[str, list[tuple[str, str, str]]]:
        calls.append(1)
        return "v1", iter(())  # never consumed when the version is unchanged

    assert cache.refresh(same_version) is False and calls and cache.index.rule_count == len(rules)

    def broken() -> tuple[str, list[tuple[str, str, str]]]:
        raise ConnectionError("database unreachable")

    assert cache.refresh(broken) is False
    health = cache.health()
    assert health.version == "v1" and health.rule_count == len(rules)
    assert health.last_error == "ConnectionError: database unreachable" and health.last_error_at is not None
    assert not health.healthy
    assert cache.guard("Ada Quartermaine").matches  # still suppressing with the last good rules
    assert cache.refresh(lambda: ("v2", [])) is True
    assert cache.health().healthy and cache.guard("Ada Quartermaine").matches == []


def test_cache_refresh_is_safe_under_concurrent_readers() -> None:
    cache = GuardCache(key=KEY)
    rules = [(ADA_REF, r.kind, r.digest_hex) for r in rule_hashes(ADA, KEY)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                result = cache.guard("Ada Quartermaine 020 7946 0018")
                assert len(result.matches) in (0, 2)  # an old or a new index, never half of one
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(50):
        cache.refresh(lambda i=i: (f"v{i}", rules if i % 2 else []))
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_pure_import_does_not_load_django() -> None:
    code = (
        "import sys; import pii.matcher, pii.guard, tests.pii.guard_testset; "
        "assert 'django' not in sys.modules, 'django imported'; "
        "assert 'torch' not in sys.modules, 'torch imported by the matcher'; "
        "assert 'presidio_analyzer' not in sys.modules, 'presidio imported by the matcher'; "
        "import compliance.guard.hf; assert 'django' not in sys.modules"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize(
    ("name", "distinctive"),
    [
        ("Barbara Liskov", True),
        ("Ada Quartermaine", True),
        ("Edsger W. Dijkstra", True),
        ("Will Smith", False),  # both common words
        ("Maria Garcia", False),  # a common first name
        ("Li Wu", False),  # too short to stand out in lower case
        ("Madonna", False),  # one word never matches
    ],
)
def test_distinctive_names_by_word_frequency(name: str, distinctive: bool) -> None:
    from pii.matcher import is_distinctive_name

    assert is_distinctive_name(name) is distinctive


def test_title_and_surname_of_a_distinctive_name(ada_index: GuardIndex) -> None:
    assert guard_text("Ask Dr. Quartermaine or Mrs Quartermaine.", ada_index).text == "Ask [removed] or [removed]."
    assert guard_text("ask dr quartermaine", ada_index).text == "ask [removed]"
    index = index_for(("b" * 32, SubjectIdentifiers(full_name="Will Smith")))
    assert guard_text("Ask Mr Smith.", index).matches == []  # not distinctive: no partial forms


def test_stream_guard_holds_back_a_value_split_across_pieces(ada_index: GuardIndex) -> None:
    from pii.guard import StreamGuard

    stream = StreamGuard(ada_index, holdback_chars=40)
    shown = [stream.feed(p) for p in ("Call +44 20 79", "46 0018 or write to Ada.Quarter", "maine@Example.com today. ")]
    shown.append(stream.close())
    text = "".join(shown)
    assert text == "Call [removed] or write to [removed] today. "
    assert "79" not in shown[0]  # the start of the number was held back, never shown
    # The state is all a stateless server needs: a new filter resumes from it.
    first = StreamGuard(ada_index, holdback_chars=40)
    out = first.feed("Her name is Ada Quar")
    resumed = StreamGuard(ada_index, holdback_chars=40, state=first.state)
    out += resumed.feed("termaine.", final=True)
    assert out == "Her name is [removed]."


def test_stream_guard_block_mode_stops_the_stream(ada_index: GuardIndex) -> None:
    from pii.guard import StreamGuard

    stream = StreamGuard(ada_index, GuardPolicy(mode="block"), holdback_chars=40)
    assert stream.feed("ok so far, ") == ""  # held back: shorter than the hold-back
    assert stream.feed("the number is 020 7946 0018") == GuardPolicy().block_text
    assert stream.feed("more text", final=True) == "" and stream.blocked
    with pytest.raises(ValueError, match="holdback_chars"):
        StreamGuard(ada_index, holdback_chars=0)
