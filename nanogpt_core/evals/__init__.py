"""Evaluation suites of a trained model. Today: nanochat's CORE metric (`evals.core`), from nanochat's eval bundle
(`evals.bundle`), with its prompts rendered as nanochat renders them (`evals.prompts`).

    from nanogpt_core.evals import evaluate_core, load_bundle
    result = evaluate_core(model, tokenizer, load_bundle(), max_per_task=500)   # -> result.core, result.tasks

`nanogpt eval RUN --core` prints the table; `nanogpt train --core-metric-every N` logs it during training.
"""

from nanogpt_core.evals.bundle import CoreBundle, CoreTask, find_bundle, load_bundle
from nanogpt_core.evals.core import CoreResult, TaskResult, evaluate_core

__all__ = ["CoreBundle", "CoreResult", "CoreTask", "TaskResult", "evaluate_core", "find_bundle", "load_bundle"]
