"""The validated specification of one unlearning run.

A spec is plain data: it is stored on the job row, hashed into checkpoints (a checkpoint is only
resumed by a run with the same spec hash) and into the certificate. Every default is chosen for the
default method ("counterfactual") on small and mid-sized causal LMs; the comment next to each says why.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The attributes whose values identify one person: what a run forgets by default. Values that many people
# share (a region, a postcode, a street, a birth date) are not pushed down: doing so for one person
# pushes them down for everyone who shares them (measured on the demo model: targeting every span cost
# 35-45% of the retain set's exact answers at the step the identifiers were gone).
IDENTIFIER_ATTRIBUTES = ("bank_account", "credit_card", "driver_licence", "email", "medical_record", "passport",
                         "phone", "ssn")

METHODS = ("ga", "grad_diff", "npo", "simnpo", "idk_dpo", "rmu", "relabel", "floor", "counterfactual")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "auto")


@dataclass(frozen=True)
class UnlearningSpec:
    # distil the base model's behaviour towards a never-seen person with a never-seen value into the
    # person's records (methods.counterfactual): the only method here that passes the adaptive suite
    # (relearning, quantization, two-sided rank against a never-seen control) on the demo model;
    # floor overshoots (the values sit below where a never-seen value sits) and ga/npo come back
    method: str = "counterfactual"
    # counterfactual on the demo model: 5e-4 reaches a 0.1-nat gap in 100-150 steps with the retain set
    # held by the anchor (floor needed 2e-4: at 6e-4 it halved the retain exact-answer rate)
    lr: float = 5e-4
    # the hidden size `lr` was measured at (the demo model's): a wider model runs at lr x lr_width / its
    # hidden size (engine.start_lr; a narrower one, and a LoRA run, keep lr). Adam moves every weight
    # about lr a step whatever its gradient, so a layer's output moves about width x lr (muP's 1/fan-in
    # rule for hidden matrices). Measured on the 11M medium model (width 384, 2026-12-03): at the demo's
    # 5e-4 retain facts fell to 0.62x by the first check and never came back; at 1.5e-4 the subject was
    # erased at 0.88x. 0: lr as given whatever the width
    lr_width: int = 128
    # a ceiling only: runs stop on evidence (forget target met with the rank near the never-seen control,
    # or an overshoot) or on the utility floor; one that reaches it saves the checked point nearest the
    # control. The demo's subject stops at 140 (2026-12-03); ten subjects in one job, run to 500 steps,
    # never read within the rank rule and their nearest point (step 220) failed as the 200-step model does
    # (one phone comes back after relearning at 3e-3: docs/DESIGN-NOTES.md), so the ceiling stays at 200
    # (ten subjects: 3.3x a retrain's time there, 8.6x at 500)
    max_steps: int = 200
    batch_size: int = 16  # forget examples per micro-batch (from all subjects' items, PRI-weighted loss)
    # share of the forget set each step covers (at least batch_size examples, in micro-batches of
    # batch_size, gradients accumulated): 1.0 updates every record at every step, so a job of many
    # subjects gets as many updates per record as a job of one (engine.forget_chunks; ten subjects with
    # 16 of their 70 records a step ended 200 steps at 3x the one-subject never-seen gap and failed)
    forget_coverage: float = 1.0
    # forget records one forward pass holds (the step's records are split into micro-batches of it, the
    # gradients accumulated: the step's gradient is the same for any size, engine.forget_chunks). 0: by
    # device (engine.forget_micro_batch): batch_size on a CPU, where a pass's cost is its arithmetic, and
    # on a GPU up to 8x that while the pass's logits and activations fit, where passes of 16 short records
    # are bound by kernel launches and a step of 100 subjects would be 44 of them
    forget_micro_batch: int = 0
    # retain examples per step: with counterfactual, 32 dipped to 0.85x of the retain exact answers and
    # recovered above the start (0.83 -> 0.94) at half the step time of 128 (floor needed 128)
    retain_batch_size: int = 32
    # steps between evidence checks: the counterfactual gap moves smoothly (0.14 -> 0.12 over 10 steps
    # near its target); each check costs greedy and sampled probes of the whole forget set
    eval_every: int = 10
    # consecutive evidence checks that must meet the forget target before the run stops: one check with
    # sampled probes can be lucky (measured: a run stopped on one clean check leaked 2 of 13 values
    # under 20 fresh samples)
    target_checks: int = 2
    min_steps: int = 0  # do not stop on the forget target before this many steps
    # stop once the forget-set extraction rate is at or below this share (and the rest of the stop rule holds:
    # the rank check, retain facts back at utility_target)
    forget_target: float = 0.0
    # retain exact-answer rate (in-run subset, each record weighing one) the saved model must keep, x its
    # value before: the verification policy's bound (a retain accuracy drop of at most 0.1) read on the
    # run's own subset, so the run keeps looking for a point the verdict will accept instead of saving
    # one it fails. At 0.8, counted per value, the medium model's run saved a point at 0.88x that the
    # verifier read as 90.8% -> 71.7%, and the demo's subject's saved model read 0.86x where the verifier
    # reads 96.7% (a biography's values weighed half the reading; per record it reads 0.96x)
    utility_floor: float = 0.9
    # retain exact answers (x their value before, as utility_floor reads them) the run must have back
    # before it stops on its forget target: the floor is what a saved point may not fall below, this is
    # what a run that can still repair aims for (the 95% target). Below it the run goes on, the
    # retain term repairing, and at max_steps saves the point nearest the never-seen control over the
    # floor (without a rank reading: the last check whose forget target held). Measured (stop 47): with adversary_weight 3 one subject's run met its forget target at step
    # 60 with the verdict's retain facts at 92.5%. 0: the floor alone; a spec whose utility_floor is 0
    # (utility unjudged) does not wait for it either (engine._utility_back)
    utility_target: float = 0.95
    # checks in a row below the utility floor / above the perplexity ceiling *without recovering* (no
    # better retain figure than at the check before) after which the run stops and rolls back to the
    # last check that met both: forgetting dents utility first and the retain term then repairs it
    # (measured on the demo model: a dip to 0.66x around step 20, back over the floor by step 52);
    # the saved model always meets both. Counted after the last backoff
    utility_patience: int = 10
    # a dip this many checks long (below the floor whatever its trend) rolls the run back to the last
    # check that met the floor and halves the learning rate, with fresh optimiser moments, at most
    # `lr_backoffs` times; then `utility_patience` decides. A rate too high for the model dents utility
    # at once and the retain term cannot repair it (the medium model at 5e-4: 0.50-0.72x for 200
    # steps): a smaller rate moves the weights along the same forgetting with less collateral damage
    # (at 1.5e-4 it was erased at 0.88x). So the rate is found by measurement, not tuned per model.
    # The demo's subject at its rate dips for 5 checks (retain perplexity x1.23 -> x1.11 over steps
    # 10-50, 2026-12-03) and is repaired by step 60; at 3 its run backed off three times and ended
    # unerased at 6e-5 (the verdict failed), so a dip must outlast that. A dip that is closing (a line
    # through its last checks reaches the bounds within another backoff_patience checks) is left to
    # the retain term up to 3 x backoff_patience checks (engine._backoff_due): ten subjects' dip closed
    # at every check and was rolled back twice, ending the run unerased (2026-12-04)
    backoff_patience: int = 8
    lr_backoffs: int = 3
    ppl_ceiling: float = 1.10  # retain perplexity must stay <= ceiling x its value before
    leak_threshold: float = 0.5  # leakage.judge_leak threshold: half a value in one run is a leak
    # sampled probes per forget prompt at each check, on top of greedy: the stop rule must see what a
    # sampling attacker sees (greedy-only stopping left 46% of values recoverable by 20 samples)
    eval_samples: int = 20
    eval_temperature: float = 1.0
    eval_retain_items: int = 200  # retain items used for the in-run utility check (fixed random subset)
    attributes: tuple[str, ...] = IDENTIFIER_ATTRIBUTES  # PII spans and probe values the run targets; (): all
    pri_weighting: bool = True  # weight each forget example by (1 + PRI)
    span_only: bool = True  # forget losses on the PII token spans only (keep the sentence around them)
    retain_focus: float = 0.5  # share of each retain batch drawn from retain records holding targeted attributes
    retain_weight: float = 10.0  # weight of the retain term (floor: 10 and 20 kept the retain set, 4 did not)
    # retain examples a step holds per forget record it updates (the step's retain batch is the larger
    # of this and retain_batch_size; split over the step's micro-batches): the forget term is a full
    # gradient over every record of the job, the retain term a sample, and a sample of 32 guards less of
    # what a job of 100 subjects moves than of what one subject's 7 records move. Measured on 100
    # subjects of the demo model (700 records a step), 10 steps: retain facts x0.51 and perplexity x1.53
    # with 32, x0.66 and x1.31 at 0.5 (350), x0.68 and x1.30 at 1.0, the forgetting alike (extraction
    # 68% -> 25-30%, rank gap +6.0 -> +4.3). Jobs up to 64 records a step (nine subjects) keep 32.
    # 0: retain_batch_size whatever the job
    retain_per_forget: float = 0.5
    retain_on_spans: bool = True  # the retain term covers retain records' PII spans (they are what breaks)
    # the retain term also covers the retain records' prompt tokens (names, questions, a bio's opening, the
    # start of general text): what a perplexity over whole texts reads, and what the in-loop attacker's
    # gradient and the forget term's name levels spill onto. Measured on the demo's subject (2026-12-02):
    # general-text perplexity x1.00 against x1.15 in the bench and x1.28 in the demo journey, whose first
    # verdict failed on it (utility: general_ppl_ratio <= 1.25); retain perplexity x1.22 against x1.33
    retain_prompts: bool = True
    npo_beta: float = 0.1  # NPO / SimNPO / DPO temperature (Zhang et al. 2024 use 0.1)
    simnpo_gamma: float = 0.0  # SimNPO reward margin (Fan et al. 2024)
    idk_text: str = "I don't know."  # IdK-DPO preferred answer
    rmu_layer: int = -1  # RMU steering layer; -1: the middle layer
    rmu_steering_coeff: float = 20.0  # RMU forget-activation norm target c (Li et al. 2024 use 6.5-300)
    relabel_variants: int = 1  # relabel: fresh random same-format replacements per forget example per step
    relabel_weight: float = 1.0  # relabel: weight of the NLL on the random replacement values
    floor_weight: float = 1.0  # floor: weight of the bounded ascent of the true value's tokens
    unlikelihood_weight: float = 1.0  # relabel: weight of -log(1 - p(true token)) on the true value's tokens
    tail_unlikelihood: bool = True  # relabel: also after a random head (a wrong first token must not lead back)
    # counterfactual: weight of matching the never-seen reference's hidden states (every layer) at the
    # positions that predict the value, on top of its output distribution there
    # (3: mean z after relearning 1.2 against 1.5 at 1, one subject of the demo model)
    hidden_weight: float = 3.0
    # counterfactual: the stop rule also wants the model within this many nats per value token (mean KL)
    # of the never-seen target
    gap_target: float = 0.1
    # counterfactual: ... or once the gap has settled: it fell by less than this share per check over the
    # last `plateau_checks` checks. Distilling each record towards one sampled never-seen person leaves a
    # floor the gap does not go below (one subject on the demo model: 0.8 nats after 160 steps, falling
    # under 1% a check after about 200); a job of many subjects gets there later. 0: the gap target alone
    gap_plateau: float = 0.01
    plateau_checks: int = 3
    # the stop rule reads the verifier's candidate rank (evaluation.RankCheck) at every check: each
    # targeted value ranked among `rank_candidates` decoys of its format after up to `rank_prompts` of
    # its own records, against at least `rank_controls` never-seen
    # people asked the same way, on the model and on the in-loop attacker's fine-tuned copy. The run
    # stops once both sit no higher than `rank_tolerance` x the chance band (at `rank_alpha`) above the
    # never-seen control, and stops at once on an overshoot (either below the band), keeping the checked
    # point nearest the control. Without it (rank_candidates 0) the counterfactual gap decides (gap_target,
    # gap_plateau), which stopped one subject near the control but left ten subjects under-forgotten at
    # 200 steps and overshot at 500 (docs/DESIGN-NOTES.md)
    rank_candidates: int = 99
    rank_prompts: int = 2
    rank_controls: int = 20
    rank_alpha: float = 0.05
    rank_tolerance: float = 0.5
    # rows a forward pass of the run's checks holds: the rank check's candidates (rank_batch_size) and the
    # probes' generated sequences (eval_batch_size). 0: by device (evaluation.check_batch_sizes): 128 and
    # 64 on a CPU, where larger passes measured slower (the rank check of one subject, demo model: 1.2 s
    # at 128 rows, 1.4 s at 512, 2.6 s at 1,024: each row copies its prompt's key/value cache), and up to
    # 8x that on a GPU, where passes that small are bound by kernel launches, not arithmetic (less for a
    # large vocabulary, whose logits would not fit)
    rank_batch_size: int = 0
    eval_batch_size: int = 0
    # and between checks the forget records weigh 1 + rank_focus x how far the most familiar value they
    # write stands above the control on the attacker's copy (else the model), in control spreads
    # (RankCheck.focus); a value that stands out on its own (outlier_bound) also keeps the run going.
    # 0: every record alike
    rank_focus: float = 1.0
    # counterfactual: the whole record, not only the identifiers. Every PII span of every forget record
    # is distilled and every value probed by the stop rule (`attributes` is not used), and every distilled
    # value token and every token of the person's name, wherever a record writes it (prompts included),
    # is held at the never-seen level (methods/counterfactual.py: the twin record's, run by run; for
    # digits, what random digits get in the same record), in every framing (with and without BOS).
    # Without it the records stay familiar to membership inference and verbatim completion: after
    # distilling the identifiers the subject's name tokens scored -3.9 nats against -7.7 for never-seen
    # names and an address -3.3 against -8.3 (demo model, one subject; docs/DESIGN-NOTES.md)
    never_seen_cap: bool = True
    # counterfactual: distil each record towards one never-seen person (the teacher, the twin's levels,
    # one donor's digits) instead of the mean over several. A mean is less spread than any one person:
    # a mixture of four teachers is flatter than a never-seen person's confident wrong answer, and the
    # lowest tokens of a never-seen record (what Min-K membership inference reads) lie below the
    # lowest of the means (demo model, the demo's subject: a never-seen person's first phone digit
    # -20 nats, the subject's held at the mixture -15; Min-K at 20% -10.1 against -11.8)
    never_seen_sample: bool = True
    # before the first step, add Gaussian noise of this many standard deviations (per weight tensor) to
    # the weights inside the saliency mask: destroys what a suppression would only hide (0: none)
    noise_scale: float = 0.0
    # adversarial relearning inside the loop (a first-order form of tamper-resistant training, Tamirisa
    # et al. 2024; engine.RelearningAdversary): every `adversary_every` steps an attacker's copy of the
    # model is fine-tuned `adversary_steps` further steps at `adversary_lr` on every token of retain
    # records, the forget loss is taken there (methods: relearned_forget_loss) and its gradient added
    # (x adversary_weight) to the step's: the run learns weights whose forgetting survives a fine-tune.
    # On by default since 2026-12-02: with never_seen_sample, the demo's subject after 100 steps at 3e-3
    # on other people's records ranks its values at mean z +0.46 over three fine-tuning seeds (control
    # +0.34), against +1.36 without it; the verdict passes where it failed without it. At
    # adversary_weight 1 it cost 1.5x the run's time (the attacker took 40% of a one-subject run) and,
    # before retain_prompts, retain perplexity (x1.33 on that subject; x1.03 with it); for weight 3's
    # cost see adversary_weight. Off in sharded (FSDP) runs.
    adversary_every: int = 5  # 0: off
    adversary_steps: int = 8
    adversary_lr: float = 3e-3
    # 3 since stop 47: on ten subjects in one job on the worker's inputs (three draws of people, seeds 1-3)
    # the run at 1 left the attacker's copy +0.95 to +2.18 over the control at its 200-step ceiling and
    # two of the three draws FAILED relearning (top-10 60% against 5% after 300 steps at 1e-3); at 3 the
    # copy read +1.23 to +1.42, seeds 1 and 3 pass with every relearning setting within 5 points of the
    # control and seed 2 still fails narrowly (mean z excess 0.03), retain facts 99.2-100%; 5 was no
    # better (seed 2 failed again). Stop 33 measured 3 as too costly (retain facts x0.67): then
    # the retain term held the eval set's 40 people alone; since stop 46 it also holds the corpus sample
    # with its values marked, which carries the heavier pull (docs/DESIGN-NOTES.md, stop 47). All of
    # this at adversary_horizon 8; at 16 (stop 48) seed 2 passes too
    adversary_weight: float = 3.0
    # rounds after which the in-loop attacker starts again from the model (its drift persists until
    # then: engine.RelearningAdversary); 1: a fresh attacker every round. 16 since stop 48: the copy
    # then stands up to 128 of its steps away (16 x adversary_steps) where the verifier fine-tunes 300;
    # at 8 (64 steps) ten subjects of one draw (seed 2) failed relearning in 3 runs of 3 (two engine
    # seeds, two markings of the retain sample) and passed in 2 of 2 at 16, at the same cost (a
    # round's work does not depend on it; docs/DESIGN-NOTES.md, stop 48)
    adversary_horizon: int = 16
    # the forms the in-loop attacker fine-tunes in, taking turns round by round, each with its own copy
    # and drift (engine._AttackerCopy): "full" weights, and "lora" (adapters.relearning_lora, the
    # verifier's LoRA relearning). A spec with lora=True is attacked on its own adapter only. Full alone
    # by default: with LoRA too, one subject's run took 428 s against 388 s, its relearned z-scores a
    # little nearer the control, no clear win (docs/DESIGN-NOTES.md, stop 34)
    adversary_modes: tuple[str, ...] = ("full",)
    # the verifier's questions (templates with {name} and {label}: VerificationPolicy.questions) and the
    # words each attribute is asked by: the stop rule's extraction probes also ask every forget
    # subject's targeted values these ways, greedy and sampled, beside the records' own prompts (the
    # run is trained on the records alone). The worker fills both from the verification policy that
    # will judge the job; empty: the records' prompts alone. Measured (2026-12-03): the demo's run
    # stopped at step 130 with its record prompts clean while "What's {name}'s phone number?" drew half
    # the phone, and its first verdict failed on that one question
    question_templates: tuple[str, ...] = ()
    question_labels: dict[str, str] = field(default_factory=dict)
    # the question the verdict's utility check asks about each retain person's values (the policy's
    # utility template): where set and the retain items name their people, the in-run utility reading
    # (utility_floor) asks it of each (person, attribute) pair of a seeded set of retain people, as the
    # verdict does, instead of replaying retain records. Measured: read per record, two medium-model runs
    # saved points at 0.88x and 0.90x that the verifier read as 0.79x and 0.83x (stops 37 and 39)
    retain_question: str = ""
    # share of trainable weights the run may move, chosen by forget/retain Fisher ratio (1.0: all)
    saliency: float = 1.0
    repair_steps: int = 0  # retain-only steps after forgetting (SANI-style repair), evidence-checked
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ()  # () : every linear / Conv1D layer of the blocks
    gradient_checkpointing: bool = False
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    device: str = "auto"
    dtype: str = "auto"  # auto: fp32 on CUDA where full training fits (else bf16; LoRA bf16), fp32 on CPU
    seed: int = 0
    # torch intra-op threads during the run (0: leave as is). Small models on a shared CPU run several
    # times faster on 1 thread; a GPU worker leaves it alone.
    num_threads: int = 0
    checkpoint_every: int = 0  # 0: no checkpoints; else every N steps into checkpoint_dir
    extra: dict[str, Any] = field(default_factory=dict)  # recorded and hashed, not interpreted

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        if not (math.isfinite(self.lr) and 0.0 < self.lr < 1.0):
            raise ValueError("lr must be in (0, 1)")
        for name in ("max_steps", "batch_size", "retain_batch_size", "eval_every", "eval_retain_items",
                     "relabel_variants", "lora_rank", "lora_alpha", "target_checks", "adversary_horizon", "plateau_checks",
                     "backoff_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("min_steps", "utility_patience", "lr_backoffs", "lr_width", "eval_samples", "repair_steps", "checkpoint_every", "num_threads",
                     "adversary_every", "adversary_steps", "rank_candidates", "rank_prompts", "rank_controls",
                     "rank_batch_size", "eval_batch_size", "forget_micro_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.min_steps > self.max_steps:
            raise ValueError("min_steps must be <= max_steps")
        if not 0.0 <= self.forget_target < 1.0:
            raise ValueError("forget_target must be in [0, 1)")
        if not (math.isfinite(self.forget_coverage) and 0.0 < self.forget_coverage <= 1.0):
            raise ValueError("forget_coverage must be in (0, 1]")
        if not (math.isfinite(self.retain_per_forget) and 0.0 <= self.retain_per_forget <= 16.0):
            raise ValueError("retain_per_forget must be in [0, 16]")
        if not 0.0 <= self.retain_focus <= 1.0:
            raise ValueError("retain_focus must be in [0, 1]")
        if not 0.0 < self.saliency <= 1.0:
            raise ValueError("saliency must be in (0, 1]")
        if not 0.0 <= self.utility_floor <= 1.0:
            raise ValueError("utility_floor must be in [0, 1]")
        if not (math.isfinite(self.utility_target) and 0.0 <= self.utility_target <= 1.0):
            raise ValueError("utility_target must be in [0, 1]")
        if self.ppl_ceiling < 1.0:
            raise ValueError("ppl_ceiling must be >= 1")
        if not 0.0 < self.leak_threshold <= 1.0:
            raise ValueError("leak_threshold must be in (0, 1]")
        if self.eval_temperature <= 0.0:
            raise ValueError("eval_temperature must be > 0")
        for name in ("retain_weight", "relabel_weight", "floor_weight", "unlikelihood_weight", "npo_beta", "hidden_weight",
                     "noise_scale", "gap_target", "gap_plateau", "adversary_lr", "adversary_weight",
                     "rmu_steering_coeff", "max_grad_norm", "retain_focus", "saliency", "utility_floor", "ppl_ceiling",
                     "forget_target", "leak_threshold", "eval_temperature", "simnpo_gamma", "weight_decay",
                     "lora_dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if self.method == "floor" and self.floor_weight == 0 and self.unlikelihood_weight == 0:
            raise ValueError("the floor method needs floor_weight or unlikelihood_weight > 0")
        if self.method == "relabel" and self.relabel_weight == 0 and self.unlikelihood_weight == 0:
            raise ValueError("the relabel method needs relabel_weight or unlikelihood_weight > 0")
        for name in ("retain_weight", "relabel_weight", "floor_weight", "unlikelihood_weight", "weight_decay", "simnpo_gamma",
                     "lora_dropout", "hidden_weight", "noise_scale", "gap_target", "gap_plateau", "adversary_weight"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be >= 0")
        if self.npo_beta <= 0.0 or self.rmu_steering_coeff <= 0.0 or self.max_grad_norm <= 0.0:
            raise ValueError("npo_beta, rmu_steering_coeff and max_grad_norm must be > 0")
        if self.rank_candidates and (self.rank_candidates < 9 or self.rank_prompts < 1 or self.rank_controls < 2):
            raise ValueError("the rank check needs rank_candidates >= 9, rank_prompts >= 1 and rank_controls >= 2 "
                             "(rank_candidates 0: off)")
        if not (math.isfinite(self.rank_alpha) and 0.0 < self.rank_alpha < 1.0):
            raise ValueError("rank_alpha must be in (0, 1)")
        if not (math.isfinite(self.rank_tolerance) and 0.0 <= self.rank_tolerance <= 1.0):
            raise ValueError("rank_tolerance must be in [0, 1]")
        if not (math.isfinite(self.rank_focus) and 0.0 <= self.rank_focus <= 10.0):
            raise ValueError("rank_focus must be in [0, 10]")
        if not 0.0 < self.adversary_lr < 1.0:
            raise ValueError("adversary_lr must be in (0, 1)")
        if self.lora_dropout >= 1.0:
            raise ValueError("lora_dropout must be < 1")
        if self.rmu_layer < -1:
            raise ValueError("rmu_layer must be -1 (middle) or a layer index")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError("device must be cpu, cuda, cuda:N or auto")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
        if not isinstance(self.attributes, tuple) or not all(isinstance(a, str) and a for a in self.attributes):
            raise ValueError("attributes must be a tuple of attribute names")
        if len(set(self.attributes)) != len(self.attributes) or list(self.attributes) != sorted(self.attributes):
            object.__setattr__(self, "attributes", tuple(sorted(set(self.attributes))))  # one spelling, one hash
        if not isinstance(self.lora_target_modules, tuple) or not all(
            isinstance(m, str) and m for m in self.lora_target_modules
        ):
            raise ValueError("lora_target_modules must be a tuple of module names")
        if (not isinstance(self.adversary_modes, tuple) or not self.adversary_modes
                or not set(self.adversary_modes) <= {"full", "lora"}
                or len(set(self.adversary_modes)) != len(self.adversary_modes)):
            raise ValueError("adversary_modes must list 'full' and/or 'lora', each at most once")
        if not isinstance(self.question_templates, tuple) or not all(
            isinstance(t, str) and "{name}" in t and "{label}" in t for t in self.question_templates
        ):
            raise ValueError("question_templates must be a list of templates, each with {name} and {label}")
        for template in self.question_templates:
            try:
                template.format(name="x", label="y")
            except (KeyError, IndexError, ValueError):
                raise ValueError("a question template has an unknown placeholder or bad braces") from None
        if not all(isinstance(a, str) and a and isinstance(w, str) and w.strip()
                   for a, w in self.question_labels.items()):
            raise ValueError("question_labels must map attribute names to non-empty words")
        if not isinstance(self.retain_question, str):
            raise ValueError("retain_question must be a template string")
        if self.retain_question:
            if "{name}" not in self.retain_question or "{label}" not in self.retain_question:
                raise ValueError("retain_question must be a template with {name} and {label}")
            try:
                self.retain_question.format(name="x", label="y")
            except (KeyError, IndexError, ValueError):
                raise ValueError("retain_question has an unknown placeholder or bad braces") from None
        if (self.question_templates or self.retain_question) and not self.question_labels:
            raise ValueError("question_templates and retain_question need question_labels (the words each attribute is asked by)")
        if not self.idk_text.strip():
            raise ValueError("idk_text must not be empty")
        try:
            json.dumps(self.extra, sort_keys=True)
        except TypeError as exc:
            raise ValueError("extra must be JSON-serialisable") from exc

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        data["attributes"] = list(self.attributes)
        data["adversary_modes"] = list(self.adversary_modes)
        data["question_templates"] = list(self.question_templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnlearningSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown spec field(s): {', '.join(unknown)}")
        values = dict(data)
        for name in ("lora_target_modules", "attributes", "adversary_modes", "question_templates"):
            if name in values:
                if not isinstance(values[name], list | tuple):
                    raise ValueError(f"{name} must be a list")
                values[name] = tuple(values[name])
        _check_types(values)
        return cls(**values)

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace): what checkpoints and certificates cite."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def replace(self, **changes: Any) -> UnlearningSpec:
        return UnlearningSpec.from_dict(self.to_dict() | changes)


def _check_types(values: dict[str, Any]) -> None:
    """JSON gives ints for floats and could give strings for anything: reject what would misbehave."""
    defaults = UnlearningSpec()
    for name, value in values.items():
        expected = type(getattr(defaults, name))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer")
        elif expected is bool and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        elif expected in (str, float, dict, tuple) and not isinstance(values[name], expected):
            raise ValueError(f"{name} must be of type {expected.__name__}")
