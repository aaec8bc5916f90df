"""The prompts CORE scores, character for character as nanochat's `core_eval` renders them.

nanochat writes its three templates in Jinja; these are the same strings in plain Python. For every task type the
few-shot examples come first, each followed by a blank line, then the item:

    multiple_choice    {query}{delim}{gold choice}\\n\\n ...   {query}{delim}{choice}       one prompt per choice
    schema             {gold context}{delim}{continuation}\\n\\n ...   {context}{delim}{continuation}
                                                                                 one prompt per context option
    language_modeling  {context.strip()}{delim}{continuation}\\n\\n ...   {context.strip()}{delim}{continuation}
                       and the same prompt without the continuation, stripped: the model must produce the rest

A multiple-choice item is scored on its choices (what differs after the shared prefix), a schema item on its shared
continuation (what follows the differing contexts), a language-modelling item on its continuation.
"""

from __future__ import annotations

import random
from typing import Any

FEWSHOT_SEED = 1234  # nanochat's: item i draws its examples with random.Random(1234 + i)

Item = dict[str, Any]


def fewshot_indices(index: int, num_items: int, num_fewshot: int) -> list[int]:
    """The items shown as examples before item `index`: `num_fewshot` others, drawn as nanochat draws them
    (`random.Random(1234 + index).sample` of every index but `index`), at most all the others when a subsample is
    smaller than the task's number of shots.

    `sample` picks positions in the population; drawing from range(num_items - 1) and skipping `index` afterwards
    picks the same items without building that list for every item (O(items²) for a 10,000-item task)."""
    count = min(num_fewshot, num_items - 1)
    if count <= 0:
        return []
    positions = random.Random(FEWSHOT_SEED + index).sample(range(num_items - 1), count)
    return [p if p < index else p + 1 for p in positions]


def render_multiple_choice(item: Item, delimiter: str, fewshot: list[Item]) -> list[str]:
    """One prompt per choice: the examples with their gold choice, then the query and that choice."""
    shown = "".join(f"{ex['query']}{delimiter}{ex['choices'][ex['gold']]}\n\n" for ex in fewshot)
    return [f"{shown}{item['query']}{delimiter}{choice}" for choice in item["choices"]]


def render_schema(item: Item, delimiter: str, fewshot: list[Item]) -> list[str]:
    """One prompt per context option, each followed by the item's one continuation."""
    shown = "".join(f"{ex['context_options'][ex['gold']]}{delimiter}{ex['continuation']}\n\n" for ex in fewshot)
    return [f"{shown}{context}{delimiter}{item['continuation']}" for context in item["context_options"]]


def render_language_modeling(item: Item, delimiter: str, fewshot: list[Item]) -> list[str]:
    """[prompt without the continuation, prompt with it]. Contexts are stripped (some datasets keep trailing
    whitespace); the prompt without is stripped too, so a delimiter's space is scored as part of the continuation
    and the shorter prompt's tokens are a clean prefix of the longer one's."""
    shown = "".join(f"{str(ex['context']).strip()}{delimiter}{ex['continuation']}\n\n" for ex in fewshot)
    context = f"{shown}{str(item['context']).strip()}{delimiter}"
    return [context.strip(), f"{context}{item['continuation']}"]


RENDERERS = {
    "multiple_choice": render_multiple_choice,
    "schema": render_schema,
    "language_modeling": render_language_modeling,
}


def render_prompts(task_type: str, items: list[Item], index: int, delimiter: str, num_fewshot: int) -> list[str]:
    """The prompts of item `index` of a task (its few-shot examples drawn from the other `items`)."""
    fewshot = [items[i] for i in fewshot_indices(index, len(items), num_fewshot)]
    return RENDERERS[task_type](items[index], delimiter, fewshot)
