"""PNG plots of a verification report (matplotlib, Agg backend: no display needed).

Pure: no Django, no environment reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearning_worker.verify.report import VerificationReport

# The headline metric of each attack: the one a before/after bar shows.
HEADLINE = {
    "direct_probe": "leak_rate",
    "sampling": "leak_rate",
    "paraphrase_jailbreak": "leak_rate",
    "verbatim": "leak_rate",
    "logit_lens": "leak_rate",
    "exposure": "mean_exposure_bits",
    "membership_inference": "auc",
    "utility": "retain_accuracy",
}


def render_plots(report: VerificationReport, history: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Draw the per-attack before/after bars and the forget/retain trade-off; return the PNG paths.

    history: one dict per evaluation of the unlearning run, with keys step, forget_extraction,
    retain_extraction, retain_ppl (as the engine records them). An empty history draws no trade-off.
    """
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: a worker has no display
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    bounds = {(c.attack, c.metric): c.bound for c in report.verdict.checks}
    rows = []
    for name, attack in report.attacks.items():
        metric = HEADLINE.get(name) or next(iter(attack.after.metrics), None) if attack.after else None
        if metric is None:
            continue
        before = attack.before.metrics.get(metric) if attack.before else None
        after = attack.after.metrics.get(metric) if attack.after else None
        rows.append((name, metric, before, after, bounds.get((name, metric)) or {}))
    if rows:
        # A grid of at most four panels a row, wide enough to read on the job page at its own width
        # (one row of eleven panels was shrunk to an unreadable strip).
        columns = min(4, len(rows))
        lines = -(-len(rows) // columns)
        fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.9 * lines), squeeze=False)
        for ax in axes.flat[len(rows):]:
            ax.set_visible(False)
        for ax, (name, metric, before, after, bound) in zip(axes.flat, rows, strict=False):
            labels = ["before", "after"] if before is not None else ["after (new model only)"]
            shown = [before, after] if before is not None else [after]
            values = [0.0 if v is None else float(v) for v in shown]
            bars = ax.bar(labels, values, color=["#9e9e9e", "#1f4e8c"][-len(values):])
            for bar, raw in zip(bars, shown, strict=True):
                ax.annotate("n/a" if raw is None else f"{raw:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=9)
            for key, style in (("max", "upper bound"), ("min", "lower bound")):
                if isinstance(bound.get(key), int | float):
                    ax.axhline(float(bound[key]), color="#b3261e", linestyle="--", linewidth=1, label=style)
            limits = [*values, *(float(v) for v in bound.values() if isinstance(v, int | float))]
            top = max(limits, default=0.0)
            ax.set_ylim(min(0.0, *limits), top * 1.18 if top > 0 else 1.0)
            if bound:
                ax.legend(fontsize=7, loc="upper right")
            ax.set_title(f"{name}\n{metric}", fontsize=10)
            ax.tick_params(labelsize=9)
        verdict = report.verdict
        headline = "PASS" if verdict.passed else f"FAIL ({len(verdict.failing)} failing checks)"
        fig.suptitle(f"Verification: {headline} (dashed: the policy's bound)", fontsize=11)
        fig.tight_layout()
        path = out / "attacks_before_after.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    points = sorted((dict(h) for h in history), key=lambda h: h["step"])
    if points:
        steps = [h["step"] for h in points]
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        ax.plot(steps, [h["forget_extraction"] for h in points], marker="o", label="forget extraction", color="#d62728")
        ax.plot(steps, [h["retain_extraction"] for h in points], marker="s", label="retain extraction", color="#2ca02c")
        ax.set_xlabel("unlearning step")
        ax.set_ylabel("extraction rate")
        ax.set_ylim(-0.02, 1.02)
        ppl = [float("nan") if h.get("retain_ppl") is None else float(h["retain_ppl"]) for h in points]
        if any(p == p for p in ppl):  # NaN != NaN: at least one measured value
            twin = ax.twinx()
            twin.plot(steps, ppl, linestyle="--", color="#7f7f7f", label="retain perplexity")
            twin.set_ylabel("retain perplexity")
            twin.legend(loc="upper center", fontsize=8)
        ax.legend(loc="center right", fontsize=8)
        ax.set_title("Forget / retain trade-off over unlearning steps", fontsize=10)
        fig.tight_layout()
        path = out / "forget_retain_tradeoff.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
