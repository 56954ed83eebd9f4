"""The pure library imports no Django and never opens a network connection.

Both are checked in a fresh interpreter: in-process, another test may already have imported Django
or built the (cached) analyzer, which would make the checks vacuous.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(str(args[1:2]) if len(args) > 1 else "connect")
        raise OSError("network disabled by test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import pii
    lazy_presidio = "presidio_analyzer" in sys.modules
    import pii.anonymize, pii.engine, pii.normalize, pii.pri, pii.scan, pii.subjects, pii.synth
    import pii.guard, pii.identifiers, pii.indexes, pii.keys, pii.matcher, pii.prefilter, pii.textnorm
    # The word frequencies and the confusables data are read from the installed packages, offline.
    assert pii.keys.is_distinctive_name('Ada Quartermaine') and not pii.keys.is_distinctive_name('Will Smith')
    assert pii.textnorm.normalize('Qu\u0430rtermaine').text == 'Quartermaine'
    analyzer = pii.build_analyzer(pii.EngineConfig(spacy_model="en_core_web_lg"))
    results = analyzer.analyze("Write to someone.else@example.co.uk or ada@mail.example.org today.")
    ours = list(attempts)
    # Control: Presidio's stock recognizer, with the same empty cache, does try the network. This
    # proves the guard would have seen our engine do it.
    import logging
    logging.disable(logging.CRITICAL)
    from presidio_analyzer.predefined_recognizers import EmailRecognizer
    EmailRecognizer().analyze("ada@mail.example.org", ["EMAIL_ADDRESS"])
    print(json.dumps({
        "control_attempts": len(attempts) - len(ours),
        "django": sorted(m for m in sys.modules if m == "django" or m.startswith("django.")),
        "presidio_loaded_by_import_pii": lazy_presidio,
        "attempts": ours,
        "emails": sorted(r.entity_type for r in results if r.entity_type == "EMAIL_ADDRESS"),
        "pipeline": analyzer.description["nlp_pipeline"],
    }))
    """
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # An empty cache: a tldextract that is allowed to fetch would have to, on this first use.
    cache = tmp_path_factory.mktemp("empty-cache")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TLDEXTRACT_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_importing_pii_loads_no_django(probe: dict) -> None:
    assert probe["django"] == []


def test_import_pii_is_lazy(probe: dict) -> None:
    assert probe["presidio_loaded_by_import_pii"] is False


def test_engine_builds_and_finds_emails_without_any_connection(probe: dict) -> None:
    # The e-mail recognizer validates domains with tldextract; a default tldextract would try to
    # fetch the public suffix list (and silently fall back), so attempts are recorded, not just refused.
    assert probe["attempts"] == []
    assert probe["control_attempts"] > 0
    assert probe["emails"] == ["EMAIL_ADDRESS", "EMAIL_ADDRESS"]


def test_uninstalled_model_falls_back_to_blank_pipeline_without_download(probe: dict) -> None:
    assert probe["pipeline"] == "spacy.blank('en')"
