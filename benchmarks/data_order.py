"""Does the order the documents are read in matter? Held-out bits per byte at equal steps, sequential vs shuffled.

    python benchmarks/data_order.py [--seeds 42 43] [--steps 450] [--shakespeare PATH] [--out FILE.json]

The demo's recipe (`TrainSettings()` defaults: depth 2, 4 x 256 tokens x 4 accumulation steps, 450 steps, nanochat's
optimizers and schedule, a 4096-token BPE trained on the training text), trained with the training loop's own step
(`train.step`) on the same tokens in two orders:

- sequential: the stream as stored, the same every epoch (the loader before shuffling existed);
- shuffled: the documents in a seeded permutation per epoch (`TokenLoader(shuffle_seed=...)`), packed the same way.

Two corpora: the built-in one with the run's own split (every 20th document held out), and tiny-shakespeare with
the last 10% of the text held out (cut at a line start; the first 90% cut into documents as `--data` would). The
validation bits per byte are over the whole held-out part, every 50 steps. Each seed gives both orders the same
initial weights, so the difference at a step is the order's. Results go to a JSON file and a plot
(`data_order.png`: training loss, where the sequential order's epoch-period sawtooth shows, and val bpb).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from nanogpt_core.data.corpus import default_corpus_documents, split_documents, split_text_into_documents
from nanogpt_core.data.loader import TokenLoader, tokenize_documents
from nanogpt_core.data.tokenizer import Tokenizer
from nanogpt_core.files import save_figure, write_json_atomic
from nanogpt_core.model.assembly import build_model
from nanogpt_core.train.bpb import evaluate_bpb
from nanogpt_core.train.settings import TrainSettings, grad_accum_steps, model_config
from nanogpt_core.train.step import accumulate_gradients, optimizer_step

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the developers' shared folder sits beside the checkout (../shared), or beside the worktrees' folder
SHAKESPEARE = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()),
                   ROOT.parent / "shared") / "data" / "tinyshakespeare.txt"
EVAL_EVERY = 50


def builtin_corpus() -> tuple[list[str], list[str]]:
    return split_documents(default_corpus_documents())


def shakespeare(path: Path, held_out: float = 0.1) -> tuple[list[str], list[str]]:
    text = path.read_text(encoding="utf-8")
    cut = text.find("\n", int(len(text) * (1 - held_out))) + 1
    return split_text_into_documents(text[:cut]), [text[cut:]]


def train_one(train_tokens: torch.Tensor, val_tokens: torch.Tensor, tokenizer: Tokenizer, shuffle: bool, seed: int,
              steps: int) -> dict:
    settings = TrainSettings(num_iterations=steps, seed=seed)
    torch.manual_seed(seed)
    model = build_model(model_config(settings, tokenizer.vocab_size))
    model.init_weights()
    optimizers = model.setup_optimizers(**settings.optimizer_lrs())
    B, T = settings.device_batch_size, settings.max_seq_len
    accum = grad_accum_steps(settings.total_batch_size, B, T)
    loader = TokenLoader(train_tokens, B, T, shuffle_seed=seed if shuffle else None, bos_id=tokenizer.bos_id)
    token_bytes = tokenizer.token_bytes()
    val_batches = (len(val_tokens) - 1) // (B * T)  # the whole held-out part
    losses, evals = [], []
    t0 = time.perf_counter()
    for step in range(steps + 1):
        if step % EVAL_EVERY == 0 or step == steps:
            bpb = evaluate_bpb(model, TokenLoader(val_tokens, B, T), val_batches, token_bytes)
            evals.append((step, bpb))
        if step == steps:
            break
        losses.append(accumulate_gradients(model, loader, accum))
        optimizer_step(model, optimizers, step, settings)
    return {"losses": losses, "evals": evals, "seconds": time.perf_counter() - t0, "epochs": loader.epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--steps", type=int, default=TrainSettings().num_iterations)
    parser.add_argument("--shakespeare", type=Path, default=SHAKESPEARE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data_order.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a shared machine's preemptions do not stall every matmul)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpora = {"built-in corpus": builtin_corpus()}
    if args.shakespeare.is_file():
        corpora["tinyshakespeare"] = shakespeare(args.shakespeare)
    else:
        print(f"note: {args.shakespeare} not found; only the built-in corpus is measured")
    results = {"machine": machine_name(), "torch": torch.__version__, "steps": args.steps, "seeds": args.seeds,
               "corpora": {}}
    prepared = {}
    for name, (train_docs, val_docs) in corpora.items():
        tokenizer = Tokenizer.train(train_docs, TrainSettings().vocab_size or 4096)
        train_tokens = tokenize_documents(train_docs, tokenizer)
        prepared[name] = (tokenizer, train_tokens, tokenize_documents(val_docs, tokenizer))
        results["corpora"][name] = {"train_tokens": len(train_tokens), "val_tokens": len(prepared[name][2]),
                                    "documents": len(train_docs),
                                    "steps_per_epoch": len(train_tokens) // TrainSettings().total_batch_size,
                                    "runs": {}}
    for seed in args.seeds:  # seed by seed, so an early stop still has every corpus and both orders
        for name, (tokenizer, train_tokens, val_tokens) in prepared.items():
            for order in ("sequential", "shuffled"):
                run = train_one(train_tokens, val_tokens, tokenizer, order == "shuffled", seed, args.steps)
                results["corpora"][name]["runs"][f"{order}/{seed}"] = run
                print(f"{name:16} {order:10} seed {seed}: val bpb {run['evals'][-1][1]:.4f} after {args.steps} "
                      f"steps ({run['epochs']} epochs, {run['seconds']:.0f}s)", flush=True)
                write_json_atomic(args.out, results)  # what is measured so far
    for name, entry in results["corpora"].items():
        for order in ("sequential", "shuffled"):
            finals = [entry["runs"][f"{order}/{s}"]["evals"][-1][1] for s in args.seeds]
            entry[order] = {"final_val_bpb": finals, "mean": statistics.mean(finals),
                            "std": statistics.stdev(finals) if len(finals) > 1 else 0.0}
        entry["shuffled_minus_sequential"] = [b - a for a, b in zip(entry["sequential"]["final_val_bpb"],
                                                                     entry["shuffled"]["final_val_bpb"])]
        print(f"{name}: sequential {entry['sequential']['mean']:.4f} ± {entry['sequential']['std']:.4f}, "
              f"shuffled {entry['shuffled']['mean']:.4f} ± {entry['shuffled']['std']:.4f} "
              f"(paired differences {[f'{d:+.4f}' for d in entry['shuffled_minus_sequential']]})", flush=True)
    write_json_atomic(args.out, results)
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    corpora = results["corpora"]
    fig, axes = plt.subplots(len(corpora), 2, figsize=(12, 4 * len(corpora)), squeeze=False)
    colors = {"sequential": "tab:red", "shuffled": "tab:blue"}
    seed = results["seeds"][0]
    for row, (name, entry) in zip(axes, corpora.items()):
        for order, color in colors.items():
            run = entry["runs"][f"{order}/{seed}"]
            row[0].plot(range(1, len(run["losses"]) + 1), run["losses"], color=color, alpha=0.7, linewidth=0.8,
                        label=order)
            for s in results["seeds"]:
                steps, bpbs = zip(*entry["runs"][f"{order}/{s}"]["evals"])
                row[1].plot(steps, bpbs, "o-", color=color, alpha=0.8, markersize=3,
                            label=order if s == seed else None)
        for epoch in range(1, results["steps"] // max(1, entry["steps_per_epoch"]) + 1):
            row[0].axvline(epoch * entry["steps_per_epoch"], color="grey", alpha=0.3, linewidth=0.8)
        row[0].set(title=f"{name}: training loss (seed {seed}; grey lines: epochs)", xlabel="step",
                   ylabel="nats/token")
        row[1].set(title=f"{name}: held-out bits per byte (all seeds)", xlabel="step", ylabel="bpb")
        last = min(min(b for _, b in entry["runs"][f"{o}/{s}"]["evals"]) for o in colors for s in results["seeds"])
        row[1].set_ylim(last - 0.05, last + 0.6)
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
