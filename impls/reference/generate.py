"""generate: autoregressive sampling with temperature, top-k and a KV cache."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def sample_next_token(logits: torch.Tensor, temperature: float, top_k: int | None, rng) -> torch.Tensor:
    """logits (B, vocab) -> next ids (B, 1). Temperature 0 is greedy."""
    if temperature == 0.0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    if top_k is not None:
        k = min(top_k, logits.size(-1))
        vals, idx = torch.topk(logits, k, dim=-1)
        probs = F.softmax(vals / temperature, dim=-1)
        return idx.gather(1, torch.multinomial(probs, num_samples=1, generator=rng))
    probs = F.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=rng)


@torch.inference_mode()
def generate(
    model, tokens: list[int], max_tokens: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 42
) -> Iterator[int]:
    """Prefill the prompt once into a KV cache, then feed one token per step."""
    if not tokens:
        raise ValueError("generate needs at least one prompt token (e.g. <|bos|>).")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}.")
    device = model.get_device()
    rng = torch.Generator(device=device)
    rng.manual_seed(seed)
    kv_cache = model.new_kv_cache(batch_size=1, seq_len=len(tokens) + max_tokens)
    ids = torch.tensor([tokens], dtype=torch.long, device=device)
    for _ in range(max_tokens):
        logits = model(ids, kv_cache=kv_cache)[:, -1, :]  # the prompt on the first step, then one token
        ids = sample_next_token(logits.float(), temperature, top_k, rng)
        yield ids.item()
