"""Shared fixtures: one analyzer per test session (Presidio and spaCy take seconds to import)."""

from __future__ import annotations

import pytest

from pii.engine import PiiAnalyzer, build_analyzer
from pii.subjects import SubjectIdentifiers


@pytest.fixture(scope="session")
def analyzer() -> PiiAnalyzer:
    return build_analyzer()


@pytest.fixture()
def ada() -> SubjectIdentifiers:
    return SubjectIdentifiers(
        full_name="Ada Quartermaine",
        emails=("Ada.Quartermaine12@example.com",),
        phones=("+1 (415) 555-0143",),
        other_identifiers=("123-45-6780", "GB29 NWBK 6016 1331 9268 19"),
    )
