"""`--inspect-every N --inspect-prompt "..."`: the attention grid of one prompt saved at step 0, every N steps and at
the end of a run (RUN/inspect/step_XXXXXX/), so a learner can watch heads form; `nanogpt inspect RUN --steps` draws
them side by side. The training loop runs it as a `StepHook` it builds from the settings.
"""

from __future__ import annotations

from typing import Any

from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.inspection.layer_stats import attention_entropy
from nanogpt_core.inspection.report import prompt_ids, token_texts
from nanogpt_core.inspection.snapshots import INSPECT_DIR, save_snapshot

HOOK_NAME = "inspect"  # the type of its records in metrics.jsonl


class AttentionSnapshots:
    """The hook's call: save the grid at a step, return each head's attention entropy (nats) to log."""

    def __init__(self, tokenizer: Tokenizer, prompt: str | None, context: int) -> None:
        # tokenized (and checked) when the run starts, so a prompt too long for the model fails before any step
        self.tokens = prompt_ids(tokenizer, prompt, context)
        self.labels = token_texts(tokenizer, self.tokens)
        self.noted = False

    def __call__(self, run: Any, step: int) -> dict[str, Any] | None:
        snapshot = save_snapshot(run.model, self.tokens, self.labels, run.run_dir, step)
        if snapshot is None:
            if not self.noted:
                run.log.note(f"--inspect-every: the attention ({run.model.use.get('attention')}) calls neither "
                             f"F.scaled_dot_product_attention nor a softmax, so no pattern is saved in "
                             f"{run.run_dir / INSPECT_DIR}.")
                self.noted = True
            return None
        return {"attention_entropy": [attention_entropy(p[None]).tolist() for p in snapshot.patterns]}
