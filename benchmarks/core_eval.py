"""CORE scoring: items batched together (nanogpt) against one item per forward (nanochat's `evaluate_example`).

    python benchmarks/core_eval.py [--items 64] [--repeats 5] [--threads 1]

The demo-sized model (depth 2, width 128, context 256, vocab 4096, random weights with a non-zero head) scores a
synthetic 5-shot multiple-choice task of built-in-corpus sentences (4 choices an item). Both ways run the same
`score_sequences`; "per item" hands it one item's sequences at a time, as nanochat forwards them. The two are timed
interleaved (A, B, A, B, ...), median of the repeats, and their decisions compared. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch

from nanogpt_core import GPTConfig, build_model
from nanogpt_core.data.corpus import default_corpus_documents
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.evals import CoreTask
from nanogpt_core.evals.core import score_sequences, task_sequences


def synthetic_items(count: int, seed: int = 0) -> list[dict]:
    """Multiple-choice items of real English: a sentence's start as the query, its end and three others' as choices."""
    sentences = [s.strip() for doc in default_corpus_documents()[:200] for s in doc.split(". ")
                 if 40 < len(s.strip()) < 160]
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        picks = rng.sample(sentences, 4)
        cut = [len(s) // 2 for s in picks]
        gold = rng.randrange(4)
        choices = [s[c:] for s, c in zip(picks, cut)]
        items.append({"query": picks[gold][:cut[gold]], "choices": choices, "gold": gold})
    return items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a shared machine: 1 is steadiest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = Tokenizer.train(default_corpus_documents()[:400], 4096)
    config = GPTConfig(sequence_len=256, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=1, n_kv_head=1,
                       n_embd=128)
    model = build_model(config)
    model.init_weights()
    torch.nn.init.normal_(model.lm_head.weight, std=0.02)
    model.eval()
    task = CoreTask("synthetic", "multiple_choice", "synthetic.jsonl", 5, " ", 25.0)
    items = synthetic_items(args.items)
    sequences = task_sequences(task, items, tokenizer, list(range(len(items))), model.rotary_seq_len)
    device = torch.device("cpu")
    batch_tokens = 4 * 256  # the demo's micro-batch: device_batch_size x context

    def batched():
        return score_sequences(model, sequences, tokenizer.bos_id, batch_tokens, device)

    def per_item():
        losses, exact = [], []
        for i in range(len(items)):
            mine = [s for s in sequences if s.item == i]
            item_losses, item_exact = score_sequences(model, mine, tokenizer.bos_id, 10**9, device)
            losses += item_losses
            exact += item_exact
        return losses, exact

    with torch.no_grad():
        times = {"batched": [], "per_item": []}
        results = {}
        batched(), per_item()  # warm-up
        for _ in range(args.repeats):
            for name, fn in (("batched", batched), ("per_item", per_item)):
                t0 = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t0)

    def decisions(losses):
        picks = []
        for i in range(len(items)):
            mine = [losses[n] for n, s in enumerate(sequences) if s.item == i]
            picks.append(mine.index(min(mine)))
        return picks

    medians = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads "
                   f"(torch {torch.__version__})",
        "items": len(items), "sequences": len(sequences),
        "tokens": sum(len(s.tokens) for s in sequences),
        "per_item_s": round(medians["per_item"], 3), "batched_s": round(medians["batched"], 3),
        "speedup": round(medians["per_item"] / medians["batched"], 2),
        "same_decisions": decisions(results["batched"][0]) == decisions(results["per_item"][0]),
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(results["batched"][0], results["per_item"][0])),
    }, indent=2))


if __name__ == "__main__":
    main()
