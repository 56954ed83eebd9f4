"""Residual memory after relearning: how far a fine-tune on other people's records brings a subject's
values back, under several fine-tuning seeds, against never-seen people.

    .venv/bin/python -m tests.benchmarks.bench_residual --model DIR --people P000000
    .venv/bin/python -m tests.benchmarks.bench_residual --model DIR --people P000000 --setting full:100:3e-3 --seeds 3

DIR is a demo-corpus model (the cached demo model, or one kept by `bench_erasure --keep`). For each
fine-tuning seed the model is fine-tuned with the verifier's own `relearn` (whole records of 40 other
trained people), then each subject's digit values (social security number, phone, e-mail) are ranked
among `--candidates` strings with other digits in the same places, under the question template, and
so are the values of `--controls` never-seen people. The verdict runs one fine-tune per setting;
this shows the spread over seeds (measured: one unlearned model passed the verdict while two of three
seeds put its social security number at rank 3 of 200).
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unlearning_worker.demo.corpus import ATTRIBUTE_LABELS
from unlearning_worker.demo.trainer import DemoModelConfig
from unlearning_worker.verify.attacks.adaptive import RelearnSetting, relearn
from unlearning_worker.verify.lm import LoadedModel

ATTRIBUTES = ("ssn", "phone", "email")


def candidates(person: Any, attribute: str, n: int) -> list[str]:
    """The true value first, then n strings with other random digits in the same places."""
    value = person.attribute(attribute)
    rng = random.Random(f"{person.person_id}:{attribute}")
    return [value] + ["".join(rng.choice("0123456789") if ch.isdigit() else ch for ch in value) for _ in range(n)]


@torch.no_grad()
def rank(model: Any, tokenizer: Any, person: Any, attribute: str, n: int) -> tuple[int, float]:
    """(rank of the true value among the candidates, its z-score against them) by summed log-probability."""
    head = tokenizer(f"Question: What is {person.name}'s {ATTRIBUTE_LABELS[attribute]}?\nAnswer:",
                     add_special_tokens=False)["input_ids"]
    texts = [head + tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in candidates(person, attribute, n)]
    width = max(map(len, texts))
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([t + [pad] * (width - len(t)) for t in texts])
    mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in texts])
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    scores = torch.tensor([float(lp[i, len(head) - 1 : len(t) - 1].sum()) for i, t in enumerate(texts)])
    z = float((scores[0] - scores[1:].mean()) / scores[1:].std())
    return 1 + int((scores[1:] > scores[0]).sum()), z


def row(label: str, model: Any, tokenizer: Any, subjects: list[Any], controls: list[Any], n: int) -> None:
    mine = [rank(model, tokenizer, p, a, n) for p in subjects for a in ATTRIBUTES]
    theirs = [rank(model, tokenizer, p, a, n) for p in controls for a in ATTRIBUTES]
    print(f"{label:<28} {' '.join(f'{r:>4}' for r, _ in mine):<24} {statistics.mean(z for _, z in mine):>+7.2f}   "
          f"{sum(r == 1 for r, _ in theirs):>3}/{len(theirs):<3} {sum(r <= 10 for r, _ in theirs):>4}   "
          f"{statistics.mean(z for _, z in theirs):>+7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--people", type=lambda s: s.split(","), required=True)
    parser.add_argument("--setting", default="full:100:3e-3")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--controls", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=199)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setting = RelearnSetting.parse(args.setting)
    corpus = DemoModelConfig().corpus()
    known = {p.person_id: p for p in corpus.people}
    unknown = [p for p in args.people if p not in known]
    if unknown:
        raise SystemExit(f"--people: not in the demo corpus: {', '.join(unknown)}")
    subjects = [known[p] for p in args.people]
    controls = corpus.holdout_people[: args.controls]
    others = [p.person_id for p in corpus.people if p.person_id not in args.people][:40]
    texts = [r.text for r in corpus.records_of(others)]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    print(f"{args.model.name}: {len(subjects)} subject(s), {len(controls)} never-seen controls, "
          f"{args.candidates} candidates per value, fine-tune {setting.name} on {len(texts)} records")
    print(f"{'':<28} {'subject ranks':<24} {'mean z':>7}   {'ctrl r1':<7} {'top10':>4}   {'ctrl z':>7}")
    row("as it is", model, tokenizer, subjects, controls, args.candidates)
    lm = LoadedModel(model=model, tokenizer=tokenizer, device=torch.device("cpu"))
    for seed in range(args.seeds):
        tuned = relearn(lm, texts, setting, batch_size=16, seed=seed)
        row(f"{setting.name} seed {seed}", tuned.model, tokenizer, subjects, controls, args.candidates)


if __name__ == "__main__":
    main()
