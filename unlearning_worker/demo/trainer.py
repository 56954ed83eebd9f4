"""Build, train and cache the demo model: a small causal LM that has memorised the demo corpus.

The model is built from a transformers config (GPT-2 or Llama architecture), with its own byte-level
BPE tokenizer trained on the corpus, and trained until greedy answers to the corpus questions are right. The result is an ordinary Hugging Face model directory, so every other part of
the system treats it exactly like a real user's model.

Results are cached under `cache_dir` by a content hash of (trainer version, config, corpus, excluded
people); a directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written model that a later call would trust.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from unlearning_worker.adapters import name_the_loss
from unlearning_worker.demo.corpus import (
    ATTRIBUTE_LABELS,
    DemoCorpus,
    DemoRecord,
    build_demo_corpus,
    question_prompt,
)
from unlearning_worker.threads import torch_threads

# Bump when the training procedure changes in a way that changes the weights: it is part of the cache key.
TRAINER_VERSION = "2"
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


@dataclass(frozen=True)
class DemoModelConfig:
    """Everything that determines the demo model. Defaults: 200 people memorised in a few CPU minutes."""

    n_people: int = 200
    seed: int = 0
    n_holdout: int = 50
    arch: Literal["gpt2", "llama"] = "gpt2"
    # 4 x 128 with a 1k vocabulary: ~0.95M parameters, far more capacity than 200 people x 6 values
    # (~20 kbit) need, and cheap enough that an optimiser step on one CPU core takes tens of milliseconds.
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    vocab_size: int = 1024
    n_positions: int = 160  # the longest biography is ~110 tokens
    steps: int = 3000
    batch_size: int = 32
    # A high constant-then-decay learning rate memorises fastest; no dropout and no weight decay,
    # since memorisation is the goal here (the opposite of ordinary training).
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    qa_weight: int = 3  # QA records are shown this many times per epoch (they carry the probes)
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = "float32"
    # Intra-op threads while training (0: leave torch's setting). One thread is several times faster
    # than two for matrices this small on a shared 2-core machine (oversubscription), and never slower.
    num_threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, hashed (e.g. a label for --big runs)

    def __post_init__(self) -> None:
        if self.n_people < 1 or self.n_holdout < 0:
            raise ValueError("n_people must be >= 1 and n_holdout >= 0")
        if self.arch not in ("gpt2", "llama"):
            raise ValueError("arch must be 'gpt2' or 'llama'")
        if min(self.n_layer, self.n_head, self.n_embd, self.steps, self.batch_size) < 1:
            raise ValueError("n_layer, n_head, n_embd, steps and batch_size must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be a multiple of n_head")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (256 bytes + specials + merges)")
        if not 0.0 < self.lr < 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("lr must be in (0, 1) and min_lr_ratio in [0, 1]")
        if self.num_threads < 0:
            raise ValueError("num_threads must be >= 0")
        if self.qa_weight < 1:
            raise ValueError("qa_weight must be >= 1")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError("dtype must be 'float32' or 'bfloat16'")

    def corpus(self) -> DemoCorpus:
        return build_demo_corpus(self.n_people, self.seed, self.n_holdout)

    @classmethod
    def big(cls, **overrides: Any) -> DemoModelConfig:
        """A 100M+ parameter model (16 x 768) for GPU runs; same corpus and tokenizer."""
        values: dict[str, Any] = {
            "n_layer": 16, "n_head": 12, "n_embd": 768, "steps": 1200, "batch_size": 64, "lr": 3e-4,
            "warmup_steps": 100, "device": "cuda", "dtype": "bfloat16", "extra": {"label": "big"},
        }
        values.update(overrides)
        return cls(**values)


ProgressFn = Callable[[int, int, float], None]  # (step, total steps, training loss)


def cache_key(config: DemoModelConfig, corpus: DemoCorpus, exclude_person_ids: frozenset[str]) -> str:
    """Content hash of what determines the weights; the device is left out (same recipe, any device)."""
    recipe = asdict(config)
    recipe.pop("device")
    recipe.pop("num_threads")
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": TRAINER_VERSION, "config": recipe}, sort_keys=True).encode())
    for record in corpus.records:
        digest.update(json.dumps([record.record_id, record.person_id, record.kind, record.text]).encode())
    digest.update(json.dumps(sorted(exclude_person_ids)).encode())
    return digest.hexdigest()


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (GPT-2 pre-tokenisation) wrapped as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digit runs stay whole for BPE ("927" may become one token): a phone number is then 4-7 tokens
    # instead of 10, which the small model memorises several times faster (measured: with one digit per
    # token, 2000 steps memorised e-mails at 93% and phone numbers at 0%).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama tokenizers, encoding a text prepends BOS: prompts at inference look like training inputs.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left",
        model_max_length=4096, clean_up_tokenization_spaces=False,
    )


def build_model(config: DemoModelConfig, tokenizer: Any) -> Any:
    """A freshly initialised causal LM from a transformers config (no weights are downloaded)."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    model_config: Any
    if config.arch == "gpt2":
        model_config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
            n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            tie_word_embeddings=True, **ids,
        )
    else:
        model_config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.n_embd, intermediate_size=4 * config.n_embd,
            num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
            num_key_value_heads=config.n_head, max_position_embeddings=config.n_positions,
            tie_word_embeddings=True, **ids,
        )
    torch.manual_seed(config.seed)
    return name_the_loss(AutoModelForCausalLM.from_config(model_config))


def _batches(
    encoded: list[list[int]], weights: list[int], batch_size: int, rng: random.Random
) -> list[list[list[int]]]:
    """One epoch of batches: shuffled, then grouped by length within windows to keep padding small."""
    order = [i for i, w in enumerate(weights) for _ in range(w)]
    rng.shuffle(order)
    window = batch_size * 16
    batches: list[list[list[int]]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i]))
        batches.extend([encoded[i] for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(batch: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):  # right padding for training: positions start at 0 for every row
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids.to(device), mask.to(device), labels.to(device)


def train_model(
    config: DemoModelConfig,
    records: list[DemoRecord],
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    inspect: Callable[[int, Any, Any], None] | None = None,
) -> None:
    """Train tokenizer and model on `records` and save both to out_dir (which must exist and be empty).

    `inspect(step, model, tokenizer)` is called every 500 steps (used to measure memorisation curves).
    """
    tokenizer = train_tokenizer([r.text for r in records], config.vocab_size)
    model = build_model(config, tokenizer)
    # bfloat16 is the compute dtype under autocast; the weights and Adam's state stay fp32 (pure bf16
    # weights lose updates under about 1/256 of a weight, which a memorising run's late, small steps are)
    model.to(device=config.device, dtype=torch.float32)
    device_type, mixed = torch.device(config.device).type, config.dtype == "bfloat16"
    model.train()
    encoded = [tokenizer(r.text)["input_ids"] + [tokenizer.eos_token_id] for r in records]
    if max(len(e) for e in encoded) > config.n_positions:
        raise ValueError("a record is longer than n_positions tokens")
    weights = [config.qa_weight if r.kind == "qa" else 1 for r in records]
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to min_lr_ratio * lr
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    rng = random.Random(f"demo-train:{config.seed}")
    queue: list[list[list[int]]] = []
    for step in range(config.steps):
        if not queue:
            queue = _batches(encoded, weights, config.batch_size, rng)
        ids, mask, labels = _collate(queue.pop(), tokenizer.pad_token_id, config.device)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=mixed):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if progress is not None and (step % 50 == 0 or step == config.steps - 1):
            progress(step + 1, config.steps, float(loss.detach()))
        if inspect is not None and (step + 1) % 500 == 0:
            inspect(step + 1, model, tokenizer)
            model.train()
    model.eval()  # saved in fp32: every consumer can load it on any device
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def train_demo_model(
    config: DemoModelConfig | None = None,
    *,
    cache_dir: Path,
    exclude_person_ids: frozenset[str] = frozenset(),
    progress: ProgressFn | None = None,
    inspect: Callable[[int, Any, Any], None] | None = None,
) -> Path:
    """The demo model directory for this config (trained now, or found in the cache).

    `exclude_person_ids` trains on the corpus without those people's records: the exact unlearning
    baseline ("retrain from scratch without the subject"). The tokenizer is trained on the same reduced
    corpus, so no trace of the excluded people survives in the vocabulary either.
    """
    config = config or DemoModelConfig()
    corpus = config.corpus()
    known = {p.person_id for p in corpus.people}
    unknown = set(exclude_person_ids) - known
    if unknown:
        raise ValueError(f"{len(unknown)} excluded person id(s) are not in the demo corpus")
    records = corpus.without(exclude_person_ids).records
    key = cache_key(config, corpus, frozenset(exclude_person_ids))
    cache_dir = Path(cache_dir)
    final = cache_dir / f"demo-model-{key[:20]}"
    if (final / "config.json").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
        started = time.perf_counter()
        with torch_threads(config.num_threads):
            train_model(config, records, tmp, progress=progress, inspect=inspect)
        manifest = {
            "cache_key": key, "trainer_version": TRAINER_VERSION, "config": asdict(config),
            "excluded_person_ids": sorted(exclude_person_ids), "train_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "demo_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a concurrent writer finishing first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def memorisation_rate(
    model_dir: Path, corpus: DemoCorpus, *, attributes: tuple[str, ...] = ("phone",), device: str = "cpu"
) -> dict[str, float]:
    """Share of trained people whose greedy answer to each attribute question is exactly right."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearning_worker.generation import generate_batch

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = name_the_loss(AutoModelForCausalLM.from_pretrained(model_dir)).to(device)  # type: ignore[arg-type]  # transformers stubs
    rates: dict[str, float] = {}
    for attribute in attributes:
        if attribute not in ATTRIBUTE_LABELS:
            raise ValueError(f"unknown attribute {attribute!r}")
        prompts = [question_prompt(p.name, attribute) for p in corpus.people]
        answers = generate_batch(model, tokenizer, prompts, max_new_tokens=40, stop_at_newline=True)
        right = sum(a[0].strip() == p.attribute(attribute) for a, p in zip(answers, corpus.people, strict=True))
        rates[attribute] = right / len(corpus.people)
    return rates
