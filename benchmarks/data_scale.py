"""Data at pretraining scale: does the cost of starting to train grow with the dataset? Is the loader fast enough?

    python benchmarks/data_scale.py [--gb 1.0] [--repeats 3] [--dir TMP] [--out benchmarks/data_scale.json]

1. A generated dataset in a temporary folder (never committed): FineWeb-edu's layout, parquet shards of ~64 MB of
   text in row groups of 1,024 documents, each document 3-30 paragraphs drawn at random from the built-in corpus.
   The large set is `--gb` GB of text; the small set is its first quarter (the same files, hard-linked), so the
   two sizes are 4x apart. In both the last shard is the held-out part.
2. Time to the first step and peak RSS, old path vs new, each in a fresh process running `train()` with the demo's
   settings and a tokenizer given (so neither trains one): the old path reads every document into memory and
   tokenizes it all before step 0 (`--no-stream --no-shuffle`, what `nanogpt train` did before streaming); the new
   path streams (`--stream`, shuffled). Time is from the call of `train()` to the end of step 0 (which includes
   the step-0 evaluation); memory is the process's VmHWM then. Medians of `--repeats` fresh processes,
   interleaved old/new.
3. The streaming loader's own throughput on the large set: tokens/s of `next_batch` after the first batch, at the
   demo's batch (4 x 256) and at nanochat's d20 batch (32 x 2048), reading parquet and tokenizing in its
   background thread; and reading pre-tokenized `.bin` shards (`nanogpt data tokenize`, written here from one
   shard, whose tokenizing rate is reported too).
4. Next to it, what training consumes: the demo's step on this CPU (the loop's own step function, 4 x 256 x 4
   accumulation steps, with the streaming loader feeding it, timing how much of each step waits for the loader),
   and one GPU at depth 20, estimated from nanochat's published d20 run (not measured here: no GPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_name, peak_rss_mb  # noqa: E402

SHARD_TEXT_BYTES = 64 << 20
ROW_GROUP_DOCUMENTS = 1024
# nanochat's d20 speedrun (README, Oct 2025): 561M parameters, 11.2B tokens of base training in about 3 hours on
# 8 x H100, 524,288 tokens a step: ~1.0M tokens/s for the node, ~130k tokens/s for one GPU.
D20_TOKENS_PER_S_PER_GPU = 11.2e9 / (3 * 3600) / 8


def generate(folder: Path, total_bytes: int, seed: int = 0) -> list[tuple[Path, int]]:
    """Parquet shards of ~SHARD_TEXT_BYTES of text each until total_bytes, in FineWeb-edu's layout; returns each
    shard with the characters of text it holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nanogpt_core.data.corpus import default_corpus_documents

    paragraphs = [p for doc in default_corpus_documents() for p in doc.split("\n\n") if len(p) > 40]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shards, written = [], 0
    while written < total_bytes:
        path = folder / f"shard_{len(shards):05d}.parquet"
        writer = pq.ParquetWriter(path, pa.schema([("text", pa.string())]))
        in_shard = 0
        while in_shard < SHARD_TEXT_BYTES:
            docs = ["\n\n".join(rng.choices(paragraphs, k=rng.randint(3, 30))) for _ in range(ROW_GROUP_DOCUMENTS)]
            writer.write_table(pa.table({"text": docs}))
            in_shard += sum(len(d) for d in docs)
        writer.close()
        shards.append((path, in_shard))
        written += in_shard
    return shards


def demo_settings(data: Path, tokenizer: Path, out: Path, stream: bool):
    from nanogpt_core.train.settings import TrainSettings

    return TrainSettings(data=str(data), tokenizer=str(tokenizer), out=str(out), device="cpu", num_iterations=1,
                         eval_every=-1, sample_every=-1, save_every=-1, stream=stream, shuffle=stream)


def first_step_child(spec: dict) -> None:
    """In a fresh process: train() until the end of step 0, then print the times and the peak RSS, and exit.

    `data_ready_s` is when the run has its loader and its validation tokens (the end of the data part of
    `_prepare`, before the model is built); `first_step_s` when step 0 (and the step-0 evaluation) is done."""
    import torch

    from nanogpt_core.data.training_data import TrainingData
    from nanogpt_core.train.loop import train

    torch.set_num_threads(1)  # on a shared machine 2 threads stall each other's matmuls; the same for both paths
    settings = demo_settings(Path(spec["data"]), Path(spec["tokenizer"]), Path(spec["out"]), spec["stream"])
    marks = {}
    val_tokens = TrainingData.val_tokens

    def timed_val_tokens(self, *args, **kwargs):
        tokens = val_tokens(self, *args, **kwargs)
        marks["data_ready_s"] = time.perf_counter() - started
        return tokens

    TrainingData.val_tokens = timed_val_tokens

    def on_step(step: int, record: dict) -> None:
        print(json.dumps({**marks, "first_step_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}),
              flush=True)
        os._exit(0)  # nothing after the first step is measured

    started = time.perf_counter()
    train(settings, on_step=on_step, stream=open(os.devnull, "w"))


def first_step(data: Path, tokenizer: Path, out: Path, stream: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    spec = json.dumps({"data": str(data), "tokenizer": str(tokenizer), "out": str(out), "stream": stream})
    proc = subprocess.run([sys.executable, __file__, "--first-step-child", spec], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def loader_rate(loader, batches: int) -> float:
    """Tokens/s of next_batch over `batches` batches after the first (which waits for the first unit)."""
    loader.next_batch()
    t0 = time.perf_counter()
    for _ in range(batches):
        loader.next_batch()
    rate = batches * loader.batch_size * loader.seq_len / (time.perf_counter() - t0)
    loader.close()
    return rate


def demo_step_with_loader(data: Path, tokenizer, steps: int) -> dict:
    """The demo's training step fed by the streaming loader: tokens/s, and the share of step time in next_batch."""
    import torch

    from nanogpt_core.data.training_data import open_training_data
    from nanogpt_core.model.assembly import build_model
    from nanogpt_core.train.settings import TrainSettings, grad_accum_steps, model_config
    from nanogpt_core.train.step import accumulate_gradients, optimizer_step

    settings = TrainSettings(num_iterations=steps)
    B, T = settings.device_batch_size, settings.max_seq_len
    loader = open_training_data(data, stream=True).train_loader(tokenizer, B, T, shuffle_seed=1)

    class Timed:
        waited = 0.0

        def next_batch(self):
            t0 = time.perf_counter()
            batch = loader.next_batch()
            Timed.waited += time.perf_counter() - t0
            return batch

    torch.manual_seed(0)
    model = build_model(model_config(settings, tokenizer.vocab_size))
    model.init_weights()
    optimizers = model.setup_optimizers(**settings.optimizer_lrs())
    accum = grad_accum_steps(settings.total_batch_size, B, T)
    timed, times, waits = Timed(), [], []
    for step in range(steps):
        before, t0 = Timed.waited, time.perf_counter()
        accumulate_gradients(model, timed, accum)
        optimizer_step(model, optimizers, step, settings)
        if step > 0:  # step 0 waits for the first unit and warms up
            times.append(time.perf_counter() - t0)
            waits.append(Timed.waited - before)
    loader.close()
    median = statistics.median(times)
    return {"steps": steps, "median_step_s": median, "tokens_per_s": settings.total_batch_size / median,
            "loader_share_of_step": sum(waits) / sum(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the large set, in GB of text")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to generate the data (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data_scale.json")
    parser.add_argument("--first-step-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_step_child:
        first_step_child(json.loads(args.first_step_child))
        return

    from nanogpt_core.data.corpus import default_corpus_documents
    from nanogpt_core.data.loader import encode_documents
    from nanogpt_core.data.sources import documents_in_order, held_out_split
    from nanogpt_core.data.stream import StreamingLoader
    from nanogpt_core.data.tokenized import TokenizedFolder, pack_token_documents, tokenize_to_shards
    from nanogpt_core.data.tokenizer import Tokenizer
    from nanogpt_core.files import write_json_atomic

    root = Path(tempfile.mkdtemp(prefix="nanogpt-data-scale-", dir=args.dir))
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        shards = generate(root / "large", int(args.gb * 1e9))
        small = root / "small"
        small.mkdir()
        quarter = shards[:max(2, len(shards) // 4)]
        for shard, _ in quarter:
            os.link(shard, small / shard.name)
        sizes = {"small": sum(n for _, n in quarter), "large": sum(n for _, n in shards)}
        on_disk = {name: sum(p.stat().st_size for p in (root / name).glob("*.parquet")) for name in sizes}
        print(f"generated {len(shards)} shards in {time.perf_counter() - t0:.0f}s: {sizes['small'] / 1e9:.2f} and "
              f"{sizes['large'] / 1e9:.2f} GB of text ({on_disk['small'] / 1e6:.0f} and {on_disk['large'] / 1e6:.0f} "
              f"MB of parquet)", flush=True)
        tokenizer = Tokenizer.train(default_corpus_documents(), 4096)
        tokenizer.save(root / "tokenizer")

        # 2. time to the first step and peak RSS, old path vs new, fresh processes interleaved
        results: dict = {"machine": machine_name(), "load_average_at_start": os.getloadavg(),
                         "gb_of_text": {k: v / 1e9 for k, v in sizes.items()},
                         "parquet_mb": {k: v / 1e6 for k, v in on_disk.items()},
                         "repeats": args.repeats, "first_step": {}}
        for name in ("small", "large"):
            runs = {"old (in memory)": [], "new (streamed)": []}
            if name == "large":  # the old path holds the whole stream: refuse to push a shared machine into swap
                expected_mb = results["first_step"]["small"]["old (in memory)"]["peak_rss_mb"] * sizes["large"] \
                    / sizes["small"]
                if expected_mb > 0.7 * available_mb():
                    raise SystemExit(f"the old path on the large set needs ~{expected_mb:,.0f} MB, more than this "
                                     f"machine has free ({available_mb():,.0f} MB); try a smaller --gb")
            for _ in range(args.repeats):
                for label, stream in (("old (in memory)", False), ("new (streamed)", True)):
                    r = first_step(root / name, root / "tokenizer", root / "run", stream)
                    runs[label].append(r)
                    print(f"{name} {label}: data ready after {r['data_ready_s']:.1f}s, first step after "
                          f"{r['first_step_s']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            results["first_step"][name] = {
                label: {key: statistics.median(r[key] for r in rs) for key in ("data_ready_s", "first_step_s",
                                                                                "peak_rss_mb")} | {"all": rs}
                for label, rs in runs.items()}

        # 3. the streaming loader's own throughput
        train_part, val_part = held_out_split(sorted((root / "large").glob("*.parquet")))
        encode = functools.partial(encode_documents, tokenizer=tokenizer)
        rates = {}
        for B, T, batches in ((4, 256, 400), (32, 2048, 20)):
            rates[f"parquet, tokenizing, {B}x{T}"] = loader_rate(StreamingLoader(train_part, encode, B, T,
                                                                                 shuffle_seed=1), batches)
        t0 = time.perf_counter()  # `nanogpt data tokenize` of one shard (and a row group held out)
        folder = tokenize_to_shards(documents_in_order(train_part[:1]), val_part[0].reader.read_unit(0), tokenizer,
                                    root / "bin", source="shard 0")
        tokenize_s = time.perf_counter() - t0
        bin_tokens = sum(n for _, n in folder.train)
        results["tokenize_tokens_per_s"] = bin_tokens / tokenize_s
        for B, T, batches in ((4, 256, 400), (32, 2048, 20)):
            rates[f".bin shards, {B}x{T}"] = loader_rate(StreamingLoader(TokenizedFolder.open(root / "bin")
                                                                         .part("train"), pack_token_documents, B, T,
                                                                         shuffle_seed=1), batches)
        results["loader_tokens_per_s"] = rates
        for label, rate in rates.items():
            print(f"loader, {label}: {rate:,.0f} tokens/s", flush=True)

        # 4. what training consumes
        results["demo_step_cpu"] = demo_step_with_loader(root / "large", tokenizer, steps=12)
        results["d20_one_gpu_estimate_tokens_per_s"] = D20_TOKENS_PER_S_PER_GPU
        print(f"demo step on this CPU: {results['demo_step_cpu']['tokens_per_s']:,.0f} tokens/s, "
              f"{100 * results['demo_step_cpu']['loader_share_of_step']:.2f}% of it waiting for the loader; "
              f"one GPU at depth 20 (nanochat's figures): ~{D20_TOKENS_PER_S_PER_GPU:,.0f} tokens/s", flush=True)
        results["seconds"] = time.perf_counter() - started
        write_json_atomic(args.out, results)
        print(markdown(results))
        print(f"({results['seconds']:.0f}s; written to {args.out})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def markdown(results: dict) -> str:
    gb = results["gb_of_text"]
    load = ", ".join(f"{x:.1f}" for x in results["load_average_at_start"])
    lines = [f"Machine: {results['machine']} (load average {load} when it started). Medians of "
             f"{results['repeats']} fresh processes.", "",
             "| data | path | data ready | first step done | peak RSS |", "|---|---|---|---|---|"]
    for name in ("small", "large"):
        for label, r in results["first_step"][name].items():
            lines.append(f"| {gb[name]:.2f} GB of text ({results['parquet_mb'][name]:,.0f} MB parquet) | {label} | "
                         f"{r['data_ready_s']:.1f} s | {r['first_step_s']:.1f} s | {r['peak_rss_mb']:,.0f} MB |")
    lines += ["", "| loader | tokens/s |", "|---|---|"]
    for label, rate in results["loader_tokens_per_s"].items():
        lines.append(f"| streaming: {label} | {rate:,.0f} |")
    demo = results["demo_step_cpu"]
    lines.append(f"| training consumes: demo step on this CPU | {demo['tokens_per_s']:,.0f} "
                 f"({100 * demo['loader_share_of_step']:.2f}% of the step in next_batch) |")
    lines.append(f"| training consumes: one GPU at depth 20 (estimate from nanochat's d20 run) | "
                 f"~{results['d20_one_gpu_estimate_tokens_per_s']:,.0f} |")
    lines.append(f"| `nanogpt data tokenize` (one process) | {results['tokenize_tokens_per_s']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
