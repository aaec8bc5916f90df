"""Turning a prompt into text with a trained model: tokens in, text out as it is generated.

Every prompt starts with <|bos|>, as every training document did, so an empty prompt means "start a new document".
Text is streamed a piece at a time; a token that ends in the middle of a multi-byte UTF-8 character is held back
until the character is complete, so the stream never shows a replacement character that the final text would not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from nanogpt_core.errors import ConfigError
from nanogpt_core.train.settings import check_seed

# Fixed prompts for the samples printed during training (nanochat's first ones, plus openings that suit the built-in
# corpus of Python documentation). Greedy decoding, so two runs with the same weights print the same text.
SAMPLE_PROMPTS = (
    "The capital of France is",
    "The opposite of hot is",
    "This module provides",
    "If the argument is omitted,",
    "Once upon a time",
)
SAMPLE_MAX_TOKENS = 24


def prompt_tokens(tokenizer, prompt: str) -> list[int]:
    """<|bos|> followed by the prompt's tokens; an empty prompt is just <|bos|>."""
    return tokenizer.encode(prompt, prepend_bos=True)


def check_sampling_args(model, tokens: list[int], max_tokens: int, temperature: float, top_k: int | None,
                        seed: int = 42) -> None:
    """Refuse, in one line each, what `generate` cannot do well: checked before any token is produced, so that a
    bad flag is never reported as an error inside the generate component."""
    if max_tokens < 0:
        raise ConfigError(f"--max-tokens must be >= 0, got {max_tokens}.")
    if not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"--temperature must be >= 0 (0 is greedy), got {temperature}.")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be >= 1 (leave it out to sample from the whole vocabulary), got {top_k}.")
    if top_k is not None and top_k > model.config.vocab_size:
        vocab = model.config.vocab_size
        raise ConfigError(f"--top-k {top_k} is more than the model's {vocab} tokens; use --top-k {vocab} or less (or "
                          f"leave it out to sample from the whole vocabulary).")
    check_seed(seed)
    context = model.config.sequence_len
    if len(tokens) > context:
        raise ConfigError(f"the prompt is {len(tokens)} tokens (with <|bos|>) but the model's context is {context} "
                          f"tokens; shorten the prompt.")
    limit = model.cos.size(1)  # the rotary table: positions beyond it have no encoding
    if len(tokens) + max_tokens > limit:
        raise ConfigError(f"prompt + --max-tokens = {len(tokens) + max_tokens} tokens exceeds the {limit} positions "
                          f"the model can encode; use --max-tokens {limit - len(tokens)} or less.")


def stream_text(
    model, tokenizer, tokens: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
    seed: int = 42,
) -> Iterator[str]:
    """Yield the completion of `tokens` as text pieces, as the model produces them."""
    check_sampling_args(model, tokens, max_tokens, temperature, top_k, seed)
    generated: list[int] = []
    shown = ""
    for token in model.generate(list(tokens), max_tokens, temperature=temperature, top_k=top_k, seed=seed):
        generated.append(token)
        text = tokenizer.decode(generated)
        if text.endswith("\ufffd"):
            continue  # probably half a character: wait for the rest of its bytes
        if len(text) > len(shown):
            yield text[len(shown):]
        shown = text
    text = tokenizer.decode(generated)
    if len(text) > len(shown):
        yield text[len(shown):]


def complete(model, tokenizer, prompt: str, max_tokens: int = SAMPLE_MAX_TOKENS, temperature: float = 0.0,
             top_k: int | None = None, seed: int = 42) -> str:
    """The whole completion of `prompt` as one string (greedy by default)."""
    return "".join(stream_text(model, tokenizer, prompt_tokens(tokenizer, prompt), max_tokens,
                               temperature=temperature, top_k=top_k, seed=seed))
