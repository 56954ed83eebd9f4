"""Unlearning a model that does not fit one device: the engine's own run, its weights sharded with FSDP.

    python -m torch.distributed.run --standalone --nproc_per_node N -m unlearning_worker.distributed RUN_DIR

`launch()` starts that (a worker does when UNLEARNING_PROCESSES > 1) and reads the run's progress
and result back; `main()` is what each process runs. The run is the engine's `run_unlearning`, with
these differences (and only these), each made where the engine calls unlearning_worker.fsdp:

- the weights are sharded with torch's FSDP ("FSDP2", `fully_shard`: what accelerate's FSDP plugin
  drives): each transformer block, then the whole model, so each process holds 1/N of every weight,
  gradient and optimiser state and gathers one block's weights at a time for its forward and backward;
- each step's forget and retain batches are split between the processes (`split`), and FSDP averages
  the gradients: the step is the single-process step up to how the per-batch mean is taken;
- the method's references (prepare) and every evidence check run on every process on the same
  inputs, so the stop rule decides the same everywhere; cancellation is agreed by an all-reduce;
- the output is gathered into one full state dict and written by process 0 only, atomically, like any run.

Refused before anything is loaded (`fsdp.check_spec`): what the sharded run does not support yet (LoRA,
saliency masks, weight noise, adversarial relearning, checkpoints and resume) and the methods not
tested under FSDP (`fsdp.METHODS`). Gloo on CPU (tested with two processes), NCCL on CUDA.

The run's inputs are personal data: RUN_DIR is private to the worker's user (0700, files 0600) and
`launch()` removes it whatever happens; nothing of them goes to the command line or the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from unlearning_worker.fsdp import check_spec
from unlearning_worker.spec import UnlearningSpec

RUN_FILE, RESULT_FILE, CANCEL_FILE = "run.json", "result.json", "cancel"
PROGRESS_PREFIX = "@progress "


def launch(
    *,
    model_dir: Path,
    out_dir: Path,
    forget: list[Any],
    retain: list[Any],
    spec: UnlearningSpec,
    processes: int,
    progress: Callable[[Any], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Run `run_unlearning` sharded over `processes` processes on this machine; returns its result
    (UnlearningResult.to_dict()). Raises UnlearningCancelled when cancelled, RuntimeError when a
    process fails (the output is then absent, as for a failed single-process run)."""
    from unlearning_worker.engine import ProgressEvent, UnlearningCancelled

    if processes < 2:
        raise ValueError("a sharded run needs at least two processes")
    check_spec(spec)
    run_dir = Path(tempfile.mkdtemp(prefix="unlearn-fsdp-", dir=work_dir))  # 0700
    process: subprocess.Popen[str] | None = None
    try:
        run_file = run_dir / RUN_FILE
        fd = os.open(run_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"model_dir": str(model_dir), "out_dir": str(out_dir), "spec": spec.to_dict(),
                       "forget": [asdict(f) for f in forget], "retain": [asdict(r) for r in retain]}, fh)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "unlearning_worker.distributed", str(run_dir)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stderr: list[str] = []
        errors = process.stderr
        reader = threading.Thread(target=lambda: stderr.extend(errors or []), daemon=True)
        reader.start()
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(PROGRESS_PREFIX) and progress is not None:
                progress(ProgressEvent(**json.loads(line[len(PROGRESS_PREFIX):])))
            if should_cancel is not None and not (run_dir / CANCEL_FILE).exists() and should_cancel():
                (run_dir / CANCEL_FILE).touch()  # the processes agree on it at their next step
        code = process.wait()
        reader.join(timeout=5)
        # A run that finished before it saw the cancellation has written its model: that result stands,
        # as for a single-process run cancelled after its last check.
        if code != 0 and (run_dir / CANCEL_FILE).exists():
            raise UnlearningCancelled("unlearning run cancelled")
        if code != 0 or not (run_dir / RESULT_FILE).is_file():
            tail = "".join(stderr[-20:]).strip()[-2000:]
            raise RuntimeError(f"the sharded unlearning run failed (exit {code}): {tail or 'no output'}")
        result: dict[str, Any] = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
        return result
    finally:
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    from unlearning_worker.data import ForgetItem, RetainItem
    from unlearning_worker.engine import ProgressEvent, run_unlearning

    run_dir = Path(argv[0])
    run = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    spec = UnlearningSpec.from_dict(run["spec"])
    cuda = spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank = dist.get_rank()

        def tuples(spans: list[list[Any]]) -> list[tuple[int, int, str]]:
            return [(int(s), int(e), str(a)) for s, e, a in spans]

        forget = [ForgetItem(**{**f, "pii_spans": tuples(f["pii_spans"]), "context_spans": tuples(f["context_spans"])})
                  for f in run["forget"]]
        retain = [RetainItem(**{**r, "pii_spans": tuples(r["pii_spans"])}) for r in run["retain"]]

        def progress(event: ProgressEvent) -> None:
            if rank == 0:
                print(PROGRESS_PREFIX + json.dumps(asdict(event)), flush=True)

        result = run_unlearning(model_dir=Path(run["model_dir"]), out_dir=Path(run["out_dir"]), forget=forget,
                                retain=retain, spec=spec, progress=progress,
                                should_cancel=lambda: (run_dir / CANCEL_FILE).exists())
        if rank == 0:
            tmp = run_dir / f".{RESULT_FILE}.tmp"
            tmp.write_text(json.dumps(result.to_dict()), encoding="utf-8")
            os.replace(tmp, run_dir / RESULT_FILE)
        dist.barrier()
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
