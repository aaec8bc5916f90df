"""Your components inside a pretrained model: the same weights assembled twice, reference vs `--use`, side by side.

`nanogpt compare` trains small models from scratch; this answers the other question a learner has once a real model
is at hand (e.g. one imported from nanochat): with *these* weights, does my attention compute what the reference
computes, and does the model still write the same text? For each prompt:

- both models decode greedily from the prompt (generated text side by side);
- the logits of both are compared on the same tokens, the prompt followed by the reference's completion (teacher
  forcing), so every compared position sees identical inputs: max and mean |difference|, and how often the two pick
  the same next token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanogpt_core.io.checkpoint import load_model
from nanogpt_core.model.registry import REFERENCE_SET
from nanogpt_core.model.use_spec import UseSpec, format_use
from nanogpt_core.train.sampling import SAMPLE_MAX_TOKENS, SAMPLE_PROMPTS, check_sampling_args, prompt_tokens

# Softcapped logits live in (-15, 15). fp32 reimplementations that differ only in the order of operations agree to
# ~1e-5 per layer; 1e-3 leaves room for a deep model while a wrong head mapping or scale is off by > 1e-1.
DEFAULT_TOLERANCE = 1e-3


@dataclass
class PromptComparison:
    prompt: str
    positions: int  # logits compared at this many positions (prompt with <|bos|> + the reference's completion)
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float  # fraction of positions where both models rank the same token first
    reference_text: str
    candidate_text: str

    @property
    def same_text(self) -> bool:
        return self.reference_text == self.candidate_text


@dataclass
class PretrainedComparison:
    checkpoint: str
    step: int
    candidate_use: dict[str, str]
    tolerance: float
    prompts: list[PromptComparison] = field(default_factory=list)

    @property
    def use_spec(self) -> str:
        return format_use(self.candidate_use)

    @property
    def max_abs_diff(self) -> float:
        return max((p.max_abs_diff for p in self.prompts), default=0.0)

    @property
    def mean_abs_diff(self) -> float:
        total = sum(p.positions for p in self.prompts)
        return sum(p.mean_abs_diff * p.positions for p in self.prompts) / total if total else 0.0

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "step": self.step, "use": self.use_spec,
                "candidate_use": self.candidate_use, "tolerance": self.tolerance, "passed": self.passed,
                "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "prompts": [{**asdict(p), "same_text": p.same_text} for p in self.prompts]}


def compare_in_pretrained(
    ckpt: str | Path,
    use: UseSpec,
    prompts: list[str] | tuple[str, ...] = SAMPLE_PROMPTS,
    max_tokens: int = SAMPLE_MAX_TOKENS,
    device: str | None = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
) -> PretrainedComparison:
    """Load `ckpt` twice, all-reference and with `use`, and compare them on `prompts` (see the module docstring)."""
    reference, tokenizer, meta = load_model(ckpt, use=REFERENCE_SET, device=device)
    candidate, _, cand_meta = load_model(ckpt, use=use, device=device)
    report = PretrainedComparison(checkpoint=meta["path"], step=meta["step"], candidate_use=cand_meta["use"],
                                  tolerance=tolerance)
    for prompt in prompts:
        tokens = prompt_tokens(tokenizer, prompt)
        check_sampling_args(reference, tokens, max_tokens, 0.0, None)
        with torch.no_grad():
            ref_ids = list(reference.generate(list(tokens), max_tokens, temperature=0.0))
            cand_ids = list(candidate.generate(list(tokens), max_tokens, temperature=0.0))
            idx = torch.tensor([tokens + ref_ids], dtype=torch.long, device=reference.get_device())
            ref_logits = reference(idx).float()
            cand_logits = candidate(idx).float()
        diff = (ref_logits - cand_logits).abs()
        agree = (ref_logits.argmax(-1) == cand_logits.argmax(-1)).float().mean().item()
        report.prompts.append(PromptComparison(
            prompt=prompt, positions=idx.size(1), max_abs_diff=diff.max().item(), mean_abs_diff=diff.mean().item(),
            top1_agreement=agree, reference_text=tokenizer.decode(ref_ids), candidate_text=tokenizer.decode(cand_ids),
        ))
    return report
