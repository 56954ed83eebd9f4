"""What a claimed job does on the worker: one function per phase, called by the Celery tasks.

    unlearn(claim, heartbeat)  inputs -> exact shard retrain or run_unlearning -> corpus erasure ->
                               candidate version handed over to verification
    verify(claim, heartbeat)   attacks on the candidate and its base -> plots -> verdict recorded

The job's inputs come from compliance.jobs.inputs as plain data (decrypted in this process only), its
outputs go where compliance.jobs.outputs says, and every state change goes through the job services
(compliance.jobs.transitions). Each returns an outcome code: "unlearned", "pass", "fail",
"cancelled" or "claim_lost".
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from compliance.jobs import inputs, outputs
from compliance.jobs import services as job_services
from compliance.jobs.models import UnlearningJob
from compliance.registry import artifacts
from compliance.registry.models import ForgetItem
from compliance.registry.selectors import EXACT_METHOD
from unlearning_worker.runtime import Heartbeat, ProgressSink, db_retry, worker_name
from unlearning_worker.runtime import device as worker_device

logger = logging.getLogger(__name__)


def unlearn(claim: job_services.Claim, heartbeat: Heartbeat) -> str:
    job = UnlearningJob.objects.select_related("model", "base_version").get(pk=claim.job_id)
    on = worker_device()
    # A stronger retry says so as it starts, and why (the log and the demo's output show the bar's label).
    label = f"job {str(job.id)[:8]} {job.method}"
    if job.strengthen_round:
        label += f" (retry {job.strengthen_round}: stronger settings, the last verdict failed)"
        logger.warning("job %s: retry %d with stronger settings after a failed verdict", job.id, job.strengthen_round)
    sink = ProgressSink(claim, heartbeat, on, label=label)
    try:
        return _unlearn_with(job, claim, heartbeat, sink, on)
    finally:
        sink.close()


def _unlearn_with(job: UnlearningJob, claim: job_services.Claim, heartbeat: Heartbeat, sink: ProgressSink, device: str) -> str:
    from unlearning_worker.engine import UnlearningCancelled

    sink({"phase": "prepare", "step": 0})
    base_dir = artifacts.within_root(Path(job.base_version.path))
    artifacts.verify_tree(base_dir, job.base_version.sha256)  # never unlearn from a tampered base

    subjects, forget, rows = inputs.subjects_and_items(job)
    if not forget:
        raise job_services.JobError("none of the job's requests has a located record for this model")
    if job.method.startswith(EXACT_METHOD):
        return _exact_with(job, claim, heartbeat, sink, rows, base_dir)
    spec = _engine_spec(job, device)
    out_dir = outputs.candidate_dir(job)
    checkpoints = outputs.checkpoint_dir(job)
    artifacts.sweep_temporaries(out_dir.parent, older_than_s=0 if not out_dir.exists() else 3600)
    started = time.monotonic()
    if out_dir.exists():
        # A previous attempt finished the engine (its rename is atomic) but died before registering.
        logger.info("job %s: reusing the finished output of an earlier attempt", job.id)
        steps, stop_reason = job.step, job.stop_reason or "resumed"
    else:
        # the corpora are read only for a run that trains (a reused output needs neither sample)
        corpus_retain, attacker_texts = _corpus_inputs(job, subjects, spec)
        retain = [*inputs.retain_items(inputs.eval_set(job, subjects)), *corpus_retain]
        try:
            steps, stop_reason = _run_engine(job, sink, spec, base_dir, out_dir, forget, retain, checkpoints,
                                             attacker_texts)
        except UnlearningCancelled:
            if sink.lost or heartbeat.lost:
                return "claim_lost"
            # Clean up before the job shows as cancelled: whoever sees "cancelled" sees no checkpoints left
            # (CI saw the directory still there right after the status changed).
            shutil.rmtree(checkpoints, ignore_errors=True)
            db_retry(lambda: job_services.job_cancelled(claim=claim, step=sink.last_step), what=f"job {job.id}: cancel")
            return "cancelled"
    if sink.lost or heartbeat.lost:
        return "claim_lost"
    sha256 = artifacts.tree_sha256(out_dir)
    # Both safe to repeat: an erased corpus version is reused, the hand-over is conditional on the claim.
    sink.close()
    corpus_versions = db_retry(lambda: outputs.erase_corpora(job, rows, actor=f"worker:{worker_name()}"), what=f"job {job.id}: corpus erasure")
    finished = db_retry(
        lambda: job_services.job_unlearning_finished(
            claim=claim, version_path=str(out_dir), sha256=sha256, corpus_versions=corpus_versions,
            stop_reason=stop_reason, steps=steps,
        ),
        what=f"job {job.id}: hand-over to verification",
    )
    if finished is None:
        return "claim_lost"
    shutil.rmtree(checkpoints, ignore_errors=True)
    logger.info("job %s: unlearned in %.1fs (%d steps, %s)", job.id, time.monotonic() - started, steps, stop_reason)
    return "unlearned"


def _exact_with(
    job: UnlearningJob, claim: job_services.Claim, heartbeat: Heartbeat, sink: ProgressSink, rows: list[ForgetItem],
    base_dir: Path,
) -> str:
    """Exact erasure (compliance.registry.sharding): erase the corpus, retrain the shard adapters that held
    the records, and, where records also sit in other training data ("both"), unlearn those from the
    exact result with the job's approximate spec. The proof is kept beside the output until handed over."""
    from compliance.registry import selectors as registry_selectors
    from compliance.registry.sharding import exact_erase

    started = time.monotonic()
    out_dir = outputs.candidate_dir(job)
    proof_file = out_dir.parent / f"job-{job.id}.exact-proof.json"
    sink.close()
    corpus_versions = db_retry(lambda: outputs.erase_corpora(job, rows, actor=f"worker:{worker_name()}"), what=f"job {job.id}: corpus erasure")
    training = registry_selectors.sharded_training(version=job.base_version) or {}
    _, others, _ = inputs.subjects_and_items(job, except_corpus=int(training.get("corpus", 0) or 0))
    if others and training.get("combine") == "route":
        raise job_services.JobError(
            "records also sit in training data outside the sharded fine-tune, and a routed sharded model cannot be "
            "unlearnt approximately: retrain the model without them, or erase them from a merged version"
        )
    exact_dir = out_dir.parent / f"job-{job.id}-exact" if others else out_dir
    if out_dir.exists() and proof_file.exists():
        logger.info("job %s: reusing the finished output of an earlier attempt", job.id)
        saved = json.loads(proof_file.read_text())
        new_training, proof, steps = saved["training"], saved["proof"], int(saved["steps"])
    else:
        for stale in {exact_dir, out_dir}:  # an attempt that died before its proof was saved: redo it
            shutil.rmtree(stale, ignore_errors=True)
        sink({"phase": "exact shard retraining", "step": 0})
        result = exact_erase(base=job.base_version, rows=rows, corpus_versions=corpus_versions, out_dir=exact_dir)
        new_training, proof, steps = result.training, result.proof, result.retrained_slices
        if others:
            steps += _approximate_on(job, claim, sink, exact_dir, out_dir, others)
            shutil.rmtree(exact_dir, ignore_errors=True)
            new_training = {}  # weights moved off the sharded fine-tune: later requests go the approximate way
        artifacts.write_json_atomic(proof_file, {"training": new_training, "proof": proof, "steps": steps})
    if sink.lost or heartbeat.lost:
        return "claim_lost"
    sha256 = artifacts.tree_sha256(out_dir)
    finished = db_retry(
        lambda: job_services.job_unlearning_finished(
            claim=claim, version_path=str(out_dir), sha256=sha256, corpus_versions=corpus_versions,
            stop_reason=EXACT_METHOD, steps=steps, training=new_training, exact_proof=proof,
        ),
        what=f"job {job.id}: hand-over to verification",
    )
    if finished is None:
        return "claim_lost"
    proof_file.unlink(missing_ok=True)
    logger.info("job %s: exact erasure in %.1fs (%d slices retrained)", job.id, time.monotonic() - started, steps)
    return "unlearned"


def _approximate_on(
    job: UnlearningJob, claim: job_services.Claim, sink: ProgressSink, model_dir: Path, out_dir: Path, forget: list[Any]
) -> int:
    """Approximate unlearning of `forget` from model_dir into out_dir with the job's spec; returns its steps."""
    subjects, _, _ = inputs.subjects_and_items(job)
    spec = _engine_spec(job, worker_device())
    corpus_retain, attacker_texts = _corpus_inputs(job, subjects, spec)
    retain = [*inputs.retain_items(inputs.eval_set(job, subjects)), *corpus_retain]
    steps, _stop = _run_engine(job, sink, spec, model_dir, out_dir, forget, retain, outputs.checkpoint_dir(job),
                               attacker_texts)
    shutil.rmtree(outputs.checkpoint_dir(job), ignore_errors=True)
    return steps


def _policy() -> Any:
    """The verification policy that judges this worker's jobs (settings.VERIFICATION_POLICY_FILE, else the default)."""
    from unlearning_worker.verify import VerificationPolicy

    return VerificationPolicy.load(Path(settings.VERIFICATION_POLICY_FILE) if settings.VERIFICATION_POLICY_FILE else None)


def _engine_spec(job: UnlearningJob, device: str) -> Any:
    """The job's spec as the engine runs it (the model's manifest records it): the device resolved,
    and, where the spec names no questions of its own, the stop rule asking the question templates of
    the policy that will judge the job, in its words for each attribute, and its utility check reading
    retain facts with the policy's utility question."""
    from unlearning_worker.spec import UnlearningSpec

    spec = UnlearningSpec.from_dict(job.spec)
    changes: dict[str, Any] = {}
    if spec.device == "auto":
        changes["device"] = device
    if not spec.question_templates:
        policy = _policy()
        changes |= {"question_templates": list(policy.questions()), "question_labels": dict(policy.attribute_labels),
                    "retain_question": policy.retain_question()}
    return spec.replace(**changes) if changes else spec


def _corpus_inputs(job: UnlearningJob, subjects: list[inputs.SubjectData], spec: Any) -> tuple[list[Any], list[str]]:
    """The engine's two samples of the training corpora, drawn in one read (inputs.corpus_samples, the
    job's keyed ranking): (retain records, the in-loop attacker's texts).

    The retain records: at most settings.UNLEARNING_RETAIN_CORPUS_TEXTS texts (0: none) without anyone
    whose erasure request is still open (the retain term must not keep them in place). The project's
    PII analyzer (the scanner's pipeline, settings.PII_SPACY_MODEL, at the scanner's default score) marks
    the values in each text's first MARK_CHARS characters, and the text is then cut before its first value
    as a located record is, so the engine's retain focus holds the other people's values of the
    attributes being forgotten; a text without values is cut in half (data.text_retain_items). With the
    eval set's 40 people alone, the other people's records drift while the subjects are unlearned
    (docs/DESIGN-NOTES.md, stops 45-46).

    The attacker's texts: the verifier's own sample (settings.VERIFICATION_CORPUS_TEXTS; the same job
    draws the same texts), so the run's stop rule reads an attacker that holds the corpus as the
    verifier's does (the verifier also drops texts holding any subject value and reads a text to the
    model's context, the engine's attacker to 512 tokens). The engine trains nothing on them but the
    attacker's copy (people whose requests are still pending are among them); the model feels them only
    through that copy's forget gradient and the rank focus it reads. None where the run has no in-loop
    attacker (spec.adversary_every 0, or a run sharded over processes)."""
    from functools import partial

    from pii import EngineConfig, build_analyzer
    from pii.records import MARK_CHARS, value_spans
    from unlearning_worker.data import text_retain_items

    retain_limit = max(int(settings.UNLEARNING_RETAIN_CORPUS_TEXTS), 0)
    attacked = bool(spec.adversary_every) and int(settings.UNLEARNING_PROCESSES) <= 1
    attacker_limit = int(settings.VERIFICATION_CORPUS_TEXTS) if attacked else 0
    samples = inputs.corpus_samples(job, subjects, attackers=attacker_limit, retain=retain_limit)
    retain: list[Any] = []
    if retain_limit:
        analyzer = build_analyzer(EngineConfig(spacy_model=settings.PII_SPACY_MODEL))
        retain = text_retain_items(samples.retain, partial(value_spans, analyzer, max_chars=MARK_CHARS))
        logger.info("job %s: the retain term holds %d texts of the training corpora, %d with marked values",
                    job.id, len(retain), sum(1 for item in retain if item.pii_spans))
    if attacked:
        logger.info("job %s: the in-loop relearning attacker holds %d texts of the training corpora",
                    job.id, len(samples.attackers))
    return retain, samples.attackers


def _line_reference(job: UnlearningJob) -> Path | None:
    """The model line's first version (the one its chain of parents starts from), whose retain facts the
    run's utility target also reads (engine.run_unlearning's `reference_dir`: a line of jobs must not add up
    each job's allowed loss). None where the base is that version, or where its files are no longer kept
    (a quarantined version past its date), are a routed sharded model's, or cannot be trusted (outside
    the artifact root, or not hashing to the registry's SHA-256): the reference is a bound on top of the
    base's, so a first version that cannot be read leaves the job to run on its base alone, with a
    warning, rather than blocking every later job of the line."""
    from unlearning_worker.routed import is_routed

    version = job.base_version
    while (parent := version.parent) is not None:  # a version's parent exists before it: no cycle
        version = parent
    if version.id == job.base_version_id:
        return None
    try:
        path = artifacts.within_root(Path(version.path))
        if not (path / "config.json").is_file() or is_routed(path):
            logger.info("job %s: the line's first version (v%d) is not kept as a model: the utility target reads the base alone",
                        job.id, version.number)
            return None
        artifacts.verify_tree(path, version.sha256)  # never read a tampered version
    except artifacts.ArtifactError as exc:
        logger.warning("job %s: the line's first version (v%d) cannot be trusted (%s): the utility target reads the base alone",
                       job.id, version.number, type(exc).__name__)
        return None
    logger.info("job %s: the utility target also reads the line's first version (v%d)", job.id, version.number)
    return path


def _run_engine(
    job: UnlearningJob, sink: ProgressSink, spec: Any, model_dir: Path, out_dir: Path, forget: list[Any],
    retain: list[Any], checkpoints: Path, relearning: list[str],
) -> tuple[int, str]:
    """The engine's run in this process, or sharded over settings.UNLEARNING_PROCESSES processes (FSDP:
    unlearning_worker.distributed; such a run takes no checkpoints). Returns (steps, stop reason)."""
    processes = int(settings.UNLEARNING_PROCESSES)
    if processes > 1:
        from unlearning_worker import distributed

        logger.info("job %s: unlearning sharded over %d processes (no checkpoints, no in-loop relearning attacker, "
                    "no rank check: the model's manifest records the spec as run)", job.id, processes)
        result = distributed.launch(model_dir=model_dir, out_dir=out_dir, forget=forget, retain=retain,
                                    spec=spec.replace(checkpoint_every=0, adversary_every=0, rank_candidates=0),
                                    processes=processes,
                                    progress=sink, should_cancel=sink.should_cancel)
        return int(result.get("steps") or 0), str(result.get("stop_reason") or "")
    from unlearning_worker.engine import run_unlearning

    run = run_unlearning(model_dir=model_dir, out_dir=out_dir, forget=forget, retain=retain, spec=spec, progress=sink,
                         should_cancel=sink.should_cancel, checkpoint_dir=checkpoints, relearning=relearning,
                         reference_dir=_line_reference(job))  # a sharded run (above) reads no reference
    return run.steps, run.stop_reason


class _Abort(Exception):
    """Stops the attack suite from its progress callback: "lost" (another worker holds the job) or "cancel"."""


def verify(claim: job_services.Claim, heartbeat: Heartbeat) -> str:
    from unlearning_worker.verify import SubjectFacts, render_plots, run_verification

    job = UnlearningJob.objects.select_related("model", "base_version", "result_version").get(pk=claim.job_id)
    if job.result_version is None:
        raise job_services.JobError("the job has no candidate version to verify")
    device = worker_device()
    candidate = artifacts.within_root(Path(job.result_version.path))
    base = artifacts.within_root(Path(job.base_version.path))
    artifacts.verify_tree(candidate, job.result_version.sha256)
    artifacts.verify_tree(base, job.base_version.sha256)
    subjects, _forget, _rows = inputs.subjects_and_items(job)
    eval_set = inputs.eval_set(job, subjects)
    policy = _policy()

    def facts(person: inputs.SubjectData) -> Any:
        return SubjectFacts(subject_key=person.subject_key, name=person.name, values=dict(person.values),
                            forget_texts=list(person.texts))

    def progress(stage: str, fraction: float) -> None:
        signal = db_retry(
            lambda: job_services.job_progress_record(
                claim=claim, phase="verifying", verification_percent=int(round(fraction * 100)),
                log_line=f"verification {stage} done", device=device,
            ),
            what=f"job {job.id}: verification progress",
        )
        if not signal.held or signal.cancel or heartbeat.lost or heartbeat.cancel:
            raise _Abort("lost" if not signal.held or heartbeat.lost else "cancel")

    job_services.job_progress_record(claim=claim, phase="verifying", verification_percent=0,
                                     log_line="verification started", device=device)
    corpus = inputs.corpus_texts(job, subjects, settings.VERIFICATION_CORPUS_TEXTS)
    logger.info("job %s: the relearning attacker holds %d texts of the training corpora", job.id, len(corpus))
    started = time.monotonic()
    try:
        report = run_verification(
            model_dir=candidate, base_model_dir=base,
            subjects=[facts(s) for s in subjects if s.values and s.name],
            retain=[facts(r) for r in eval_set.retain],
            holdout_texts=eval_set.holdout_texts, general_texts=eval_set.general_texts,
            controls=[facts(c) for c in eval_set.controls] if eval_set.controls else None,
            policy=policy, device=device, progress=progress,
            other_texts=corpus,
        )
    except _Abort as abort:
        if str(abort) == "lost":
            return "claim_lost"
        db_retry(lambda: job_services.job_cancelled(claim=claim), what=f"job {job.id}: cancel")
        return "cancelled"
    wall_s = time.monotonic() - started
    document = report.to_dict()
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    plots_final = outputs.reports_dir(job, hashlib.sha256(canonical).hexdigest())
    if not plots_final.exists():
        with artifacts.atomic_directory(plots_final) as tmp:
            render_plots(report, list(job.history or []), tmp)
            (tmp / "report.json").write_bytes(canonical)
    verdict = report.verdict
    recorded = db_retry(
        lambda: job_services.job_verification_record(
            claim=claim,
            passed=bool(verdict.passed),
            report=json.loads(canonical),
            report_sha256=hashlib.sha256(canonical).hexdigest(),
            policy={"name": policy.name, "sha256": policy.sha256},
            decided_by=list(verdict.decided_by),
            plots_dir=str(plots_final),
            wall_s=wall_s,
        ),
        what=f"job {job.id}: verdict",
    )
    if recorded is None:
        return "claim_lost"
    return "pass" if verdict.passed else "fail"
