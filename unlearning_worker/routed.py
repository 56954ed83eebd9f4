"""Routed shard adapters behind one causal-LM interface (combine "route").

Adding the shard adapters' updates into one set of weights loses what they learnt (measured in
bench_sharded: "sum" wrecks the model, "mean" dilutes each shard's facts K-fold). Routing keeps it:
each sequence is served by the shard under which its input is most likely (mean log-probability of
the input tokens). For a question about a person, the shard that learnt the person assigns their name
the highest likelihood, so it answers; measured, this routing answers as many trained questions as
routing by the confidence of each shard's own answer (143 of 180 on the bench's default size, against
a single adapter's 102). The route depends only on the input and the shard adapters, so an exact
erasure (retraining the shards that held a person) stays exact for the routed model too.

`RoutedCausalLM` is what the attack suite and the bench load: one `forward` (with labels, hidden states
and a KV cache) whose route is chosen on the first call of a sequence and kept in the cache, so
generation, scoring, logit lens, fine-tuning (relearning attacks, through the chosen shard) and weight
quantization (every shard's layers) all work on it as on a plain model. It holds K models: K times the
memory and compute of one, the price of exactness without merging.

Pure: no Django, no environment reads.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unlearning_worker.adapters import name_the_loss

MANIFEST_NAME = "sharding.json"  # the manifest of a sharded model version (unlearning_worker.sharded.train)
ADAPTERS_DIR = "adapters"


class RoutedCache:
    """The per-row route and one KV cache per shard; deep-copyable and repeatable like HF caches."""

    def __init__(self, routes: torch.Tensor, caches: list[Any]) -> None:
        self.routes = routes
        self.caches = caches

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.routes = self.routes.repeat_interleave(repeats, dim=0)
        for cache in self.caches:
            cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (or repeat) the rows `indices` names: several prompts' caches shared by their candidates."""
        self.routes = self.routes[indices.to(self.routes.device)]
        for cache in self.caches:
            cache.batch_select_indices(indices)

    def __deepcopy__(self, memo: dict[int, Any]) -> RoutedCache:
        return RoutedCache(self.routes.clone(), [copy.deepcopy(c, memo) for c in self.caches])


class RoutedCausalLM(torch.nn.Module):
    """K causal LMs (the base with one shard adapter each) served as one, routed per sequence."""

    def __init__(self, shards: list[Any]) -> None:
        super().__init__()
        if not shards:
            raise ValueError("a routed model needs at least one shard")
        self.shards = torch.nn.ModuleList(shards)
        self.config = shards[0].config
        # transformers 5 names the KV cache argument `cache` (`past_key_values` is deprecated)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(shards[0].forward).parameters else "past_key_values"

    # --- the parts of the PreTrainedModel interface the service uses -------------------------------

    @property
    def _first(self) -> Any:
        # The first shard, typed as the transformers model it is: an item of a ModuleList is typed
        # Module, whose unknown attributes torch types as Tensor | Module (not callable as methods).
        return self.shards[0]

    @property
    def base_model(self) -> Any:  # the final norm is shared (adapters never touch it)
        return self._first.base_model

    def get_output_embeddings(self) -> Any:  # the head is shared too
        return self._first.get_output_embeddings()

    def get_input_embeddings(self) -> Any:
        return self._first.get_input_embeddings()

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> Any:
        return self._first.prepare_inputs_for_generation(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- routing -------------------------------------------------------------------------------------

    @staticmethod
    def _input_likelihood(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Mean log-probability of each row's input tokens (after the first) under one shard."""
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        weight = torch.ones_like(picked) if mask is None else mask[:, 1:].to(picked.dtype)
        return (picked * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)

    def forward(  # noqa: PLR0913  (the causal-LM keyword interface)
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        cache: Any = None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        from transformers.modeling_outputs import CausalLMOutputWithPast

        past = cache if cache is not None else past_key_values
        outputs = []
        for k, shard in enumerate(self.shards):
            shard_past = past.caches[k] if isinstance(past, RoutedCache) else None
            outputs.append(shard(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=use_cache, output_hidden_states=output_hidden_states,
                                 **{self._cache_kwarg: shard_past}, **kwargs))
        if isinstance(past, RoutedCache):
            routes = past.routes
        elif input_ids.shape[1] > 1:
            with torch.no_grad():
                scores = torch.stack([self._input_likelihood(o.logits, input_ids, attention_mask) for o in outputs])
            routes = scores.argmax(dim=0)
        else:  # a one-token input has no likelihood to route on: the first shard answers
            routes = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        logits = torch.stack([o.logits for o in outputs])[routes.to(input_ids.device), rows]
        hidden = None
        if output_hidden_states:
            hidden = tuple(torch.stack(layer)[routes, rows] for layer in zip(*(o.hidden_states for o in outputs), strict=True))
        loss = None
        if labels is not None:
            shifted = labels[:, 1:].reshape(-1)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shifted,
                                                     ignore_index=-100)
        new_cache = RoutedCache(routes, [_cache_of(o) for o in outputs]) if use_cache else None
        # The output's cache field is `cache` in transformers 5 (`past_key_values` there is a deprecated
        # alias that logs a warning) and `past_key_values` in transformers 4, which has no `cache`.
        cache_field = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
        cache_out: dict[str, Any] = {cache_field: new_cache}
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden, **cache_out)


def _cache_of(output: Any) -> Any:
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


def add_lora_updates(model: Any, adapters: Sequence[dict[str, torch.Tensor]], scale: float) -> Any:
    """Add `scale` x B A of every LoRA pair in `adapters` (peft state dicts) to the matching base weights,
    summed in float32 in the given order (GPT-2's Conv1D layers store (in, out): the update is transposed)."""
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    deltas: dict[str, torch.Tensor] = {}
    for state in adapters:
        for key, a in sorted(state.items()):
            if ".lora_A." not in key:
                continue
            b = state[key.replace(".lora_A.", ".lora_B.")]
            name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            if name not in modules:
                raise ValueError(f"adapter targets a module the base model does not have: {name}")
            delta = (b.float() @ a.float()) * scale  # (out, in)
            if isinstance(modules[name], Conv1D):
                delta = delta.T
            deltas[name] = deltas[name] + delta if name in deltas else delta
    with torch.no_grad():
        for name, delta in deltas.items():
            weight = modules[name].weight
            weight.copy_((weight.float() + delta).to(weight.dtype))
    return model


def _manifest(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    return document if isinstance(document, dict) else None


def is_routed(model_dir: Path) -> bool:
    document = _manifest(model_dir)
    return document is not None and document.get("recipe", {}).get("combine") == "route"


def load_routed(model_dir: Path, device: str | torch.device = "cpu") -> RoutedCausalLM:
    """A routed sharded model directory: the base weights, `adapters/<k>.safetensors` and sharding.json."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    document = _manifest(model_dir)
    if document is None or document.get("recipe", {}).get("combine") != "route":
        raise ValueError("not a routed sharded model directory")
    recipe = document["recipe"]
    scale = recipe["lora_alpha"] / recipe["lora_rank"]
    shards = []
    for index in range(int(recipe["shards"])):
        model = name_the_loss(AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32))
        add_lora_updates(model, [load_file(Path(model_dir) / ADAPTERS_DIR / f"{index}.safetensors")], scale)
        shards.append(model)
    routed = RoutedCausalLM(shards).to(device)
    routed.eval()
    return routed
