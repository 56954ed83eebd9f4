"""One set of defaults: .env.example, the settings' own defaults and the README say the same.

`.env.example` is what an operator copies; every tuning value in it must be the value the service
uses when the variable is not set, and the README's defaults must be the settings' defaults. Values
that are about one deployment (hosts, URLs, file paths, secrets, TLS) are listed as such below.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = (ROOT / "compliance" / "settings.py").read_text()
README = (ROOT / "README.md").read_text()

# Set in .env.example for a production deployment on purpose: they differ from the embedded defaults.
DEPLOYMENT_SPECIFIC = {
    "COMPLIANCE_ENV", "COMPLIANCE_DATA_DIR", "BEHIND_TLS_PROXY", "SITE_URL", "ORGANISATION_NAME",
    "SUPERVISORY_AUTHORITY", "CELERY_RESULT_BACKEND", "EMAIL_HOST_USER", "AUDIT_LOG_ORIGIN",
    "AUDIT_SIGNING_KEY_FILE", "AUDIT_KEYRING_FILE", "AUDIT_SIGNED_HEAD_FILE", "AUDIT_WITNESSES", "AUDIT_WITNESS_QUORUM",
    "ARTIFACT_ROOT",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
}


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            values[m.group(1)] = m.group(2)
    return values


def settings_defaults() -> dict[str, tuple[str, object]]:
    """NAME -> (kind, default) for every env_int/env_str/env_bool call whose default is a literal."""
    out: dict[str, tuple[str, object]] = {}
    for node in ast.walk(ast.parse(SETTINGS)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("env_int", "env_str", "env_bool")):
            continue
        if len(node.args) < 2 or not isinstance(node.args[0], ast.Constant):
            continue
        try:
            default = _literal(node.args[1])
        except ValueError:
            continue  # computed from other settings (paths under DATA_DIR, PRODUCTION flags)
        out[str(node.args[0].value)] = (node.func.id, default)
    return out


def _literal(node: ast.expr) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, int) and isinstance(right, int):
            return left * right
    raise ValueError("not a literal")


def _as_env(kind: str, default: object) -> str:
    if kind == "env_bool":
        return "true" if default else "false"
    return str(default)


def test_every_tuning_value_of_env_example_is_the_settings_default() -> None:
    defaults = settings_defaults()
    checked, mismatches = 0, []
    for name, value in env_example().items():
        if name in DEPLOYMENT_SPECIFIC or name not in defaults:
            continue
        kind, default = defaults[name]
        checked += 1
        if value != _as_env(kind, default):
            mismatches.append(f"{name}: .env.example says {value!r}, settings default {_as_env(kind, default)!r}")
    assert mismatches == []
    assert checked >= 30  # the parse really found the settings' defaults


def test_the_parse_sees_a_mismatch() -> None:
    kind, default = settings_defaults()["JOB_MAX_ATTEMPTS"]
    assert _as_env(kind, default) == env_example()["JOB_MAX_ATTEMPTS"]
    assert _as_env(kind, default) != str(int(str(default)) + 1)


@pytest.mark.parametrize(
    ("setting", "readme_pattern"),
    [
        ("UNLEARNING_DEFAULT_METHOD", r"method, `([a-z_]+)` \(see docs/DESIGN-NOTES.md\)"),
        ("AUDIT_CHECKPOINT_INTERVAL_S", r"`AUDIT_CHECKPOINT_INTERVAL_S` \(default (\d+) s\)"),
        ("GUARD_NAME_MODE", r"`GUARD_NAME_MODE`\s+sets the default \(`([a-z_]+)`"),
        ("UNLEARNING_PROCESSES", r"`UNLEARNING_PROCESSES` \(default\s+(\d+)\)"),
    ],
)
def test_readme_states_the_settings_defaults(setting: str, readme_pattern: str) -> None:
    kind, default = settings_defaults()[setting]
    found = re.search(readme_pattern, README)
    assert found is not None, f"the README no longer states the default of {setting}"
    assert found.group(1) == _as_env(kind, default)


def test_jobs_checkpoint_by_default_so_a_killed_worker_resumes(settings: object) -> None:
    from compliance.jobs.specs import build_spec

    assert settings_defaults()["UNLEARNING_CHECKPOINT_EVERY"][1] == 25
    assert build_spec().spec["checkpoint_every"] == 25
    assert build_spec(overrides={"checkpoint_every": 0}).spec["checkpoint_every"] == 0


def test_beat_runs_every_periodic_task_and_each_is_a_registered_task(settings: object) -> None:
    """Retention and reminders run on their own: each periodic job is in the beat schedule, under a
    task name a worker knows (a typo would make beat send messages nobody consumes)."""
    from compliance.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}  # type: ignore[attr-defined]
    assert {"erasure.purge_due", "erasure.deadline_reminders", "audit.checkpoint", "certificates.issue_pending",
            "jobs.dispatch", "jobs.reconcile"} <= scheduled
    assert scheduled <= set(app.tasks), scheduled - set(app.tasks)


@pytest.mark.parametrize(
    ("task", "queue"),
    [("unlearning.run_job", "gpu"), ("verification.run_job", "gpu"), ("unlearning.train_sharded", "gpu"),
     ("jobs.dispatch", "default"), ("erasure.scan_request", "default"), ("certificates.issue_pending", "default")],
)
def test_tasks_are_routed_by_the_settings(task: str, queue: str) -> None:
    """Routing lives in CELERY_TASK_ROUTES (the tasks' own `queue` attribute is deprecated in Celery)."""
    from compliance.celery import app
    from compliance.common.tasks import queue_for

    app.loader.import_default_modules()
    assert app.amqp.router.route({}, task)["queue"].name == queue
    assert queue_for(task) == queue


def test_the_demo_eval_set_holds_as_many_control_people_as_the_shipped_policy_reads() -> None:
    from compliance.demo.registration import DEMO_CONTROL_PEOPLE, eval_set_document
    from unlearning_worker.demo.trainer import DemoModelConfig
    from unlearning_worker.verify import VerificationPolicy

    assert DEMO_CONTROL_PEOPLE == VerificationPolicy.load(None).control_people
    document = eval_set_document(DemoModelConfig().corpus(), retain_people=4)
    assert len(document["controls"]) == DEMO_CONTROL_PEOPLE
    assert len({c["key"] for c in document["controls"]}) == DEMO_CONTROL_PEOPLE
