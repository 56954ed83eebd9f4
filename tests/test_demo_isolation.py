"""A started service loads no demo code and no test generator.

The demo (compliance/demo/, unlearning_worker/demo/) and the test generators (tests/) are imported by
./scripts/demo, tests and benchmarks only. The `demo-isolation` contract in .importlinter checks the
static imports; this checks what a process has actually loaded after starting the way the web
process, the Celery workers and the management commands start, so imports by name (INSTALLED_APPS,
URL include() strings, the Celery app's task modules) count too.

Checked in a fresh interpreter with production settings: in-process, pytest has already imported
the demo for other tests, which would make the check vacuous.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_deployment import production_env

ROOT = Path(__file__).resolve().parent.parent

# Loading the installed app imports its package and apps.py (both without demo code): Django needs
# the app installed to find `manage.py demo`.
DEMO_APP_MODULES = ["compliance.demo", "compliance.demo.apps"]

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys

    import django
    django.setup()

    # 1. The web process: every URL conf (include() imports the faces' modules by name), WSGI and ASGI.
    import compliance.urls, compliance.wsgi, compliance.asgi
    from django.urls import get_resolver
    get_resolver().url_patterns

    # 2. The Celery workers: the app, the task modules it loads by name, then every task module.
    from compliance.celery import app
    app.loader.import_default_modules()
    import compliance.audit.tasks, compliance.common.tasks, compliance.erasure.tasks, compliance.jobs.tasks
    import unlearning_worker.tasks, unlearning_worker.sharding

    # 3. Every management command except the demo's own.
    from django.core.management import get_commands, load_command_class
    for name, app_name in sorted(get_commands().items()):
        if app_name != "compliance.demo":
            load_command_class(app_name, name)

    for extra in sys.argv[1:]:  # the control: what the check reports when demo code is loaded
        importlib.import_module(extra)

    ours = ("compliance", "pii", "unlearning_worker", "tests")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ours)
    print(json.dumps({
        "demo_or_tests": [m for m in loaded if "demo" in m.split(".")[1:] or m.split(".")[0] == "tests"],
        "loaded": loaded,
    }))
    """
)


def _probe(tmp_path: Path, *extra_imports: str) -> dict[str, list[str]]:
    env = production_env(tmp_path, PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, *extra_imports],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_started_service_loads_only_the_demo_apps_config(tmp_path: Path) -> None:
    probe = _probe(tmp_path)
    # The probe did start the service: the faces, the tasks and the production commands are loaded.
    assert {
        "compliance.public.views", "compliance.portal.views", "compliance.api.views", "compliance.erasure.tasks",
        "unlearning_worker.tasks", "compliance.registry.management.commands.register_model",
    } <= set(probe["loaded"])
    assert probe["demo_or_tests"] == DEMO_APP_MODULES


@pytest.mark.slow
@pytest.mark.parametrize(
    "demo_module",
    ["compliance.demo.registration", "unlearning_worker.demo.corpus", "tests.pii.corpusgen", "tests.pii.guard_testset"],
)
def test_the_check_reports_demo_code_once_it_is_loaded(tmp_path: Path, demo_module: str) -> None:
    probe = _probe(tmp_path, demo_module)
    assert demo_module in probe["demo_or_tests"]
