"""Attack-based verification of unlearning (issue 7).

After every unlearning job, and on demand against any model version, the worker attacks the model
for each subject and each PII attribute and returns a verdict against a policy (a JSON file).

    policy = VerificationPolicy.load(None)          # or an organisation's file
    report = run_verification(model_dir=..., base_model_dir=..., subjects=[SubjectFacts(...)],
                              retain=[...], holdout_texts=[...], general_texts=[...], policy=policy)
    report.verdict.passed, report.verdict.decided_by, report.to_dict()
    render_plots(report, history, out_dir)

Pure: no Django, no environment reads.
"""

from unlearning_worker.verify.facts import SubjectFacts
from unlearning_worker.verify.plots import render_plots
from unlearning_worker.verify.policy import VerificationPolicy
from unlearning_worker.verify.registry import ATTACKS, AttackContext, AttackOutcome, Cell, register_attack
from unlearning_worker.verify.report import CheckResult, Verdict, VerificationReport
from unlearning_worker.verify.runner import run_verification, verify_loaded

__all__ = [
    "ATTACKS",
    "AttackContext",
    "AttackOutcome",
    "Cell",
    "CheckResult",
    "SubjectFacts",
    "Verdict",
    "VerificationPolicy",
    "VerificationReport",
    "register_attack",
    "render_plots",
    "run_verification",
    "verify_loaded",
]
