"""One look inside a model on one prompt: what `nanogpt inspect` computes, draws and writes.

    result = inspect_prompt(model, tokenizer, "The function returns", out_dir="runs/demo/inspect")
    result.lens, result.stats, result.files          # the tables' numbers and the pictures written

With `against` (the same weights assembled from other implementations) both models run the prompt and the attention
maps are drawn side by side with their difference, so a learner sees where their attention departs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.errors import ConfigError
from nanogpt_core.files import write_json_atomic
from nanogpt_core.inspection.capture import ActivationCache, run_with_cache
from nanogpt_core.inspection.layer_stats import LayerStats, layer_stats
from nanogpt_core.inspection.lens import LogitLens, logit_lens
from nanogpt_core.inspection.pictures import draw_attention, draw_attention_against, draw_logit_lens

DEFAULT_PROMPT = "If the argument is omitted, the function returns"  # suits the built-in corpus (Python's docs)
ATTENTION_FILE = "attention.png"
LENS_FILE = "logit_lens.png"
NUMBERS_FILE = "inspect.json"
MAX_LENS_POSITIONS = 24  # the lens picture and table show the last 24 positions: more cells cannot be read


@dataclass
class Against:
    """The same prompt through the same weights assembled from another set."""

    use_spec: str
    pattern_diff: list[list[float]] | None  # [layer][head]: max |mine - theirs|; None when either has no pattern
    logits_max_diff: float
    cache: ActivationCache


@dataclass
class Inspection:
    use_spec: str
    tokens: list[int]
    labels: list[str]  # each token's text
    cache: ActivationCache
    lens: LogitLens
    stats: list[LayerStats]
    against: Against | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def patterns(self, cache: ActivationCache | None = None) -> list[torch.Tensor]:
        """Each layer's attention pattern (H, T, T) of the prompt (`cache`: another model's, same prompt)."""
        return [p[0].float().cpu() for p in (cache or self.cache).per_layer("attn.pattern")]

    def to_dict(self) -> dict[str, Any]:
        lens = self.lens
        data = {
            "use": self.use_spec, "tokens": self.tokens, "labels": self.labels,
            "logit_lens": {"rows": lens.rows, "top_ids": lens.top_ids.tolist(),
                           "top_probs": [[round(p, 6) for p in row] for row in lens.top_probs.tolist()]},
            "layers": [vars(s) for s in self.stats],
            "missing": dict(self.cache.missing),
            "files": {k: str(v) for k, v in self.files.items()},
        }
        if self.against is not None:
            data["against"] = {"use": self.against.use_spec, "pattern_max_abs_diff": self.against.pattern_diff,
                               "logits_max_abs_diff": self.against.logits_max_diff}
        return data


def prompt_ids(tokenizer: Tokenizer, prompt: str | None, context: int) -> list[int]:
    """<|bos|> and the prompt's tokens, as every training document starts. A prompt of the user's that is empty or
    longer than the context is refused; the default prompt (None) is cut to the context, so a model trained on a
    short context still gets its pictures."""
    if prompt is None:
        return tokenizer.encode(DEFAULT_PROMPT, prepend_bos=True)[:context]
    if not prompt.strip():
        raise ConfigError("the prompt is empty; give a few words to look at, e.g. --prompt \"The function returns\".")
    tokens = tokenizer.encode(prompt, prepend_bos=True)
    if len(tokens) > context:
        raise ConfigError(f"the prompt is {len(tokens)} tokens with <|bos|>, more than the model's context of "
                          f"{context}; use a shorter --prompt.")
    return tokens


def token_texts(tokenizer: Tokenizer, tokens: list[int]) -> list[str]:
    return [tokenizer.decode([t]) for t in tokens]


def inspect_prompt(model: nn.Module, tokenizer: Tokenizer, prompt: str | None = None,
                   out_dir: str | Path | None = None, against: nn.Module | None = None, title: str = "") -> Inspection:
    """Run `prompt` (None: DEFAULT_PROMPT) through `model` with every point captured; with `out_dir`, draw and write
    the pictures and inspect.json. `title` adds to every picture's title (e.g. the run and step)."""
    tokens = prompt_ids(tokenizer, prompt, model.config.sequence_len)
    idx = torch.tensor([tokens], dtype=torch.long, device=model.get_device())
    logits, cache = run_with_cache(model, idx)
    result = Inspection(model.use_spec, tokens, token_texts(tokenizer, tokens), cache,
                        logit_lens(model, cache, idx), layer_stats(cache))
    if against is not None:
        their_logits, theirs = run_with_cache(against, idx)
        both = _has_patterns(cache) and _has_patterns(theirs)
        result.against = Against(
            use_spec=against.use_spec,
            pattern_diff=[(a - b).abs().amax(dim=(-2, -1)).tolist()
                          for a, b in zip(result.patterns(), result.patterns(theirs))] if both else None,
            logits_max_diff=(logits.float() - their_logits.float()).abs().max().item(),
            cache=theirs,
        )
    if out_dir is not None:
        write_pictures(result, tokenizer, Path(out_dir), title)
    return result


def write_pictures(result: Inspection, tokenizer: Tokenizer, out_dir: Path, title: str = "") -> dict[str, Path]:
    suffix = f" · {title}" if title else ""
    entropies = [s.attn_entropy for s in result.stats]
    files = result.files
    if _has_patterns(result.cache):
        files["attention"] = draw_attention(result.patterns(), result.labels,
                                            f"attention of {result.use_spec}{suffix}", out_dir / ATTENTION_FILE,
                                            entropies=None if None in entropies else entropies)
    keep = slice(max(0, len(result.tokens) - MAX_LENS_POSITIONS), None)
    lens = LogitLens(result.lens.rows, result.lens.top_ids[:, keep], result.lens.top_probs[:, keep],
                     result.lens.next_probs[:, keep])
    files["logit_lens"] = draw_logit_lens(lens, result.tokens[keep], lambda i: tokenizer.decode([i]),
                                          f"logit lens of {result.use_spec}: the top next-token guess read from "
                                          f"each residual stream{suffix}", out_dir / LENS_FILE)
    if result.against is not None and result.against.pattern_diff is not None:
        theirs = result.against.use_spec
        files["against"] = draw_attention_against(
            result.patterns(), result.patterns(result.against.cache), result.labels, (result.use_spec, theirs),
            f"attention of {result.use_spec} against {theirs}, same weights{suffix}",
            out_dir / f"attention_vs_{_file_safe(theirs)}.png")
    files["numbers"] = out_dir / NUMBERS_FILE
    write_json_atomic(files["numbers"], result.to_dict())
    return files


def _has_patterns(cache: ActivationCache) -> bool:
    return all(f"blocks.{i}.attn.pattern" in cache for i in range(cache.n_layer))


def _file_safe(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_") or "other"
