"""generate (student): autoregressive sampling with a KV cache.

Contract: `generate(model, tokens, max_tokens, temperature=1.0, top_k=None, seed=42)` yields `max_tokens` ints.
Temperature 0 is greedy (argmax); otherwise divide logits by temperature, optionally keep the top_k, softmax and
sample with a torch.Generator seeded with `seed`. Use `model.new_kv_cache(1, len(tokens) + max_tokens)`: pass the
whole prompt once, then one token per step with `model(ids, kv_cache=cache)`.

Constants: the softmax is over the vocabulary (dim=-1) of the last position's logits (logits[:, -1, :]); with top_k,
divide the top values by the temperature too and map the sampled position back to its token id (indices.gather);
pass generator=rng to torch.multinomial; never yield the prompt.

Why a KV cache: keys and values of past positions never change, so keeping them makes each new token cost one
position of compute instead of the whole prefix.
"""

from collections.abc import Iterator


def generate(
    model, tokens: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 42
) -> Iterator[int]:
    raise NotImplementedError(
        "TODO: Implement generate.generate — seeded torch.Generator; KV cache from model.new_kv_cache; forward the "
        "prompt, then repeatedly sample the next id from the last position's logits and feed it back; yield each id. "
        "Reference: `nanogpt show reference:generate.generate`"
    )
