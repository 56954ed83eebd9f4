"""Where a job's outputs go, and the corpus versions it publishes.

    candidate_dir(job)   the new model version's directory (written atomically by the engine)
    checkpoint_dir(job)  the engine's resumable checkpoints (removed when the job finishes or fails)
    reports_dir(job, digest)  the verification report and its plots
    erase_corpora(job, rows, actor)  one new version per corpus that held the job's records
"""

from __future__ import annotations

from pathlib import Path

from compliance.jobs.models import UnlearningJob
from compliance.registry import artifacts
from compliance.registry.erasure import corpus_erase
from compliance.registry.models import CorpusVersion, ForgetItem


def candidate_dir(job: UnlearningJob) -> Path:
    return artifacts.artifact_root() / "models" / job.model.name / f"job-{job.id}"


def checkpoint_dir(job: UnlearningJob) -> Path:
    return checkpoint_dir_of(str(job.id))


def checkpoint_dir_of(job_id: str) -> Path:
    return artifacts.artifact_root() / "checkpoints" / job_id


def reports_dir(job: UnlearningJob, digest: str) -> Path:
    return artifacts.artifact_root() / "reports" / f"{job.id}-{digest[:12]}"


def erase_corpora(job: UnlearningJob, rows: list[ForgetItem], *, actor: str) -> list[CorpusVersion]:
    """One new version per corpus holding the job's records (reused on a rerun of the same job)."""
    existing = {cv.corpus_id: cv for cv in CorpusVersion.objects.filter(created_by_job=job)}
    by_corpus: dict[int, list[ForgetItem]] = {}
    for row in rows:
        by_corpus.setdefault(row.corpus_version.corpus_id, []).append(row)
    out: list[CorpusVersion] = []
    for corpus_id, items in by_corpus.items():
        if corpus_id in existing:
            out.append(existing[corpus_id])
            continue
        version = corpus_erase(corpus=items[0].corpus_version.corpus, items=items, created_by_job=job,
                               actor=actor)
        if version is not None:
            out.append(version)
    return out
