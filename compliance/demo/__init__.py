"""The demo: `manage.py demo` (./scripts/demo) runs one erasure request through the whole journey on
the embedded default, on a small model the project trains itself (unlearning_worker.demo).

Nothing in production imports this package (the `demo-isolation` contract in .importlinter and
tests/test_demo_isolation.py). It is an installed app only so that Django finds its management
command; loading the app imports this file and apps.py, nothing else.
"""
