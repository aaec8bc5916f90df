"""nanogpt benchmarks: every figure is a ratio against a baseline measured side by side in the same run.

    python benchmarks/run.py [--quick] [--out benchmarks/results.json]

1. assembly overhead: train step (forward + backward + optimizer) of the plugin-assembled all-reference model vs a
   single-file monolithic model of the same math (benchmarks/monolithic_gpt.py) with the same weights;
2. KV cache: tokens/s of generate with the cache vs recomputing the whole prefix (greedy, outputs compared);
3. training throughput: tok/s of the demo model, and model FLOPs utilisation against this machine's own measured
   fp32 matmul peak (and against the GPU's bf16 peak on CUDA);
4. memory: peak memory of a train step (CPU: resident set growth in a fresh process; CUDA: max_memory_allocated);
5. Newton-Schulz dtype: a Muon step on the model's matrices in fp32 vs bf16, and whether the dtype the optimizer
   setup measured and chose (`nanogpt_core.device.newton_schulz_dtype`) is the faster one;
6. precision and compilation: a train step eager in fp32 (today's default), eager under bf16 autocast, and
   torch.compile'd (inductor, with the system's C++ compiler on a CPU) in fp32 and in bf16 (CPU bf16 only where the
   CPU has bf16 instructions; `--time` runs compile and use bf16 where this says they help).

Timings interleave the candidates (A, B, A, B, ...) and report medians after warm-up, so a slow spell of the machine
hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from monolithic_gpt import MonolithicGPT  # noqa: E402

from nanogpt_core import GPTConfig, TrainSettings, build_model  # noqa: E402
from nanogpt_core.device import autocast_context, cpu_has_native_bf16  # noqa: E402
from nanogpt_impls.reference.optimizer import setup_optimizers  # noqa: E402

VOCAB = 4096


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def interleaved_medians(candidates: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def train_step_fn(model, loss_fn, optimizers, idx, targets, precision=contextlib.nullcontext) -> Callable[[], None]:
    """One train step: the loss (computed under `precision()`, e.g. an autocast), backward, every optimizer."""
    def step() -> None:
        with precision():
            loss = loss_fn(idx, targets)
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

    return step


def bench_assembly(depth: int, batch: int, seq: int, repeats: int) -> dict:
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=seq)
    torch.manual_seed(0)
    assembled = build_model(cfg)
    assembled.init_weights()
    mono = MonolithicGPT(cfg)
    mono.load_state_dict(assembled.state_dict())
    mono.config, mono.get_device = cfg, assembled.get_device  # what setup_optimizers reads
    idx = torch.randint(0, VOCAB, (batch, seq))
    targets = torch.randint(0, VOCAB, (batch, seq))
    with torch.no_grad():  # same math: the two losses agree before any timing
        diff = abs(assembled(idx, targets).item() - mono(idx, targets).item())
    steps = {
        "monolithic": train_step_fn(mono, mono, setup_optimizers(mono), idx, targets),
        "assembled": train_step_fn(assembled, lambda i, t: assembled(i, targets=t), assembled.setup_optimizers(),
                                   idx, targets),
    }
    med = interleaved_medians(steps, repeats=repeats, warmup=2)
    return {"depth": depth, "batch": batch, "seq": seq, "loss_abs_diff": diff,
            "monolithic_ms": med["monolithic"] * 1e3, "assembled_ms": med["assembled"] * 1e3,
            "ratio": med["assembled"] / med["monolithic"]}


def bench_kv_cache(depth: int, prompt_len: int, new_tokens: int) -> dict:
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=512)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    with torch.no_grad():  # a random head, so greedy decoding produces varied tokens
        model.lm_head.weight.normal_(0, cfg.n_embd**-0.5)
    model.eval()
    prompt = torch.randint(0, VOCAB, (prompt_len,)).tolist()

    def recompute() -> list[int]:
        ids = list(prompt)
        with torch.inference_mode():
            for _ in range(new_tokens):
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        return ids[prompt_len:]

    t0 = time.perf_counter()
    cached = list(model.generate(prompt, new_tokens, temperature=0.0))
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = recompute()
    t_full = time.perf_counter() - t0
    return {"depth": depth, "prompt": prompt_len, "new_tokens": new_tokens, "identical": cached == full,
            "cached_tok_s": new_tokens / t_cached, "recompute_tok_s": new_tokens / t_full, "speedup": t_full / t_cached}


def measured_matmul_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_throughput(depth: int, batch: int, seq: int, repeats: int) -> dict:
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=seq)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    idx = torch.randint(0, VOCAB, (batch, seq))
    step = train_step_fn(model, lambda i, t: model(i, targets=t), model.setup_optimizers(), idx, idx)
    med = interleaved_medians({"train": step}, repeats=repeats, warmup=2)["train"]
    tok_s = batch * seq / med
    peak = measured_matmul_peak_flops()
    return {"depth": depth, "batch": batch, "seq": seq, "params": model.num_params(), "tok_s": tok_s,
            "flops_per_token": model.estimate_flops(), "matmul_peak_gflops": peak / 1e9,
            "mfu_vs_matmul_peak": tok_s * model.estimate_flops() / peak}


def bench_newton_schulz(depth: int, repeats: int) -> dict:
    """A Muon step on the block matrices of a depth-`depth` model, fp32 vs bf16 iterations, and the setup's choice."""
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=256)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    _, muon = model.setup_optimizers()
    chosen = muon.param_groups[0]["ns_dtype"]
    for p in muon.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)

    def step_in(dtype: str) -> Callable[[], None]:
        def step() -> None:
            for group in muon.param_groups:
                group["ns_dtype"] = dtype
            muon.step()
        return step

    med = interleaved_medians({"float32": step_in("float32"), "bfloat16": step_in("bfloat16")}, repeats, warmup=2)
    faster = min(med, key=med.get)
    return {"depth": depth, "matrices": len(muon.param_groups[0]["params"]), "fp32_ms": med["float32"] * 1e3,
            "bf16_ms": med["bfloat16"] * 1e3, "chosen": chosen, "faster": faster, "chose_faster": chosen == faster}


def bench_precision_and_compile(depth: int, batch: int, seq: int, repeats: int) -> dict:
    """A train step (one micro-batch, the optimizers' step) of the same model eager or compiled, fp32 or bf16."""
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=seq)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    modes = {"eager fp32": (False, False), "eager bf16": (False, True), "compiled fp32": (True, False),
             "compiled bf16": (True, True)}
    if device.type == "cpu" and not cpu_has_native_bf16():
        modes = {name: mode for name, mode in modes.items() if not mode[1]}
    idx = torch.randint(0, VOCAB, (batch, seq), device=device)
    steps = {}
    for name, (compiled, bf16) in modes.items():
        torch.manual_seed(0)
        model = build_model(cfg, device=device)
        model.init_weights()
        forward = torch.compile(model, dynamic=False) if compiled else model
        steps[name] = train_step_fn(model, forward, model.setup_optimizers(), idx, idx,
                                    precision=lambda bf16=bf16: autocast_context(device, bf16))
    t0 = time.perf_counter()
    med = interleaved_medians(steps, repeats=repeats, warmup=2)  # the warm-up compiles
    base = med["eager fp32"]
    return {"depth": depth, "batch": batch, "seq": seq, "ms": {name: 1000 * t for name, t in med.items()},
            "ratio": {name: t / base for name, t in med.items()}, "seconds": time.perf_counter() - t0}


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark. /proc's VmHWM belongs to this program alone; getrusage's maxrss
    would also count the parent's peak from before the exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: an upper bound


def memory_child(depth: int, batch: int, seq: int) -> None:
    """Run in a fresh process: resident-set growth from before the first train step to the peak of three steps."""
    cfg = GPTConfig.from_depth(depth, vocab_size=VOCAB, sequence_len=seq)
    model = build_model(cfg)
    model.init_weights()
    optimizers = model.setup_optimizers()
    idx = torch.randint(0, VOCAB, (batch, seq))
    before = peak_rss_mb()
    step = train_step_fn(model, lambda i, t: model(i, targets=t), optimizers, idx, idx)
    for _ in range(3):
        step()
    peak = peak_rss_mb()
    print(json.dumps({"depth": depth, "batch": batch, "seq": seq, "peak_rss_mb": peak,
                      "train_step_growth_mb": peak - before}))


def bench_memory(depth: int, batch: int, seq: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", f"{depth},{batch},{seq}"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']} (torch {results['torch']}).", "",
             "| benchmark | setting | baseline | nanogpt | ratio | goal |", "|---|---|---|---|---|---|"]
    for r in results.get("assembly", []):
        lines.append(f"| assembly overhead (train step) | depth {r['depth']}, B={r['batch']}, T={r['seq']} | "
                     f"{r['monolithic_ms']:.1f} ms monolithic | {r['assembled_ms']:.1f} ms assembled | "
                     f"{r['ratio']:.3f} | <= 1.03 |")
    if "kv_cache" in results:
        k = results["kv_cache"]
        lines.append(f"| KV cache (generate, greedy) | depth {k['depth']}, {k['prompt']}-token prompt, "
                     f"{k['new_tokens']} new | {k['recompute_tok_s']:.0f} tok/s recompute | "
                     f"{k['cached_tok_s']:.0f} tok/s cached | "
                     f"{k['speedup']:.1f}x (outputs identical: {k['identical']}) | >= 5x |")
    if "throughput" in results:
        t = results["throughput"]
        lines.append(f"| training throughput (demo model) | depth {t['depth']}, B={t['batch']}, T={t['seq']}, "
                     f"{t['params'] / 1e6:.1f}M params | {t['matmul_peak_gflops']:.0f} GFLOP/s fp32 matmul peak | "
                     f"{t['tok_s']:.0f} tok/s | MFU {100 * t['mfu_vs_matmul_peak']:.1f}% of measured peak | - |")
    for p in results.get("precision", []):
        cells = ", ".join(f"{name} {p['ms'][name]:.0f} ms ({p['ratio'][name]:.2f})" for name in p["ms"]
                          if name != "eager fp32")
        lines.append(f"| precision and compile (train step) | depth {p['depth']}, B={p['batch']}, T={p['seq']} | "
                     f"{p['ms']['eager fp32']:.0f} ms eager fp32 | {cells} | best "
                     f"{min(p['ratio'].values()):.2f} | - |")
    for n in results.get("newton_schulz", []):
        lines.append(f"| Newton-Schulz dtype (Muon step) | depth {n['depth']}, {n['matrices']} matrices | "
                     f"{n['fp32_ms']:.1f} ms fp32 | {n['bf16_ms']:.1f} ms bf16 | chose {n['chosen']} "
                     f"(the faster: {n['chose_faster']}) | the faster |")
    if "memory" in results:
        m = results["memory"]
        lines.append(f"| memory (train step) | depth {m['depth']}, B={m['batch']}, T={m['seq']} | - | "
                     f"peak RSS {m['peak_rss_mb']:.0f} MB | +{m['train_step_growth_mb']:.0f} MB during steps | - |")
    return "\n".join(lines)


DEMO = TrainSettings()  # the model `nanogpt train` trains with no flags
SECTIONS: dict[str, Callable[[int, bool], object]] = {
    "assembly": lambda repeats, quick: [bench_assembly(d, batch=4, seq=256, repeats=repeats) for d in (4, 8)],
    "kv_cache": lambda repeats, quick: bench_kv_cache(4, prompt_len=64, new_tokens=64 if quick else 256),
    "throughput": lambda repeats, quick: bench_throughput(DEMO.depth, batch=DEMO.device_batch_size,
                                                          seq=DEMO.max_seq_len, repeats=repeats),
    "memory": lambda repeats, quick: bench_memory(4, batch=4, seq=256),
    "newton_schulz": lambda repeats, quick: [bench_newton_schulz(d, repeats) for d in (DEMO.depth, 4)],
    "precision": lambda repeats, quick: [bench_precision_and_compile(d, batch=b, seq=256, repeats=repeats)
                                         for d, b in ((DEMO.depth, DEMO.device_batch_size), (4, 8))],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for the README)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    parser.add_argument("--only", help="comma-separated sections to rerun (" + ", ".join(SECTIONS) + "); the "
                        "others keep their figures in --out")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*(int(v) for v in args.memory_child.split(",")))
        return
    repeats = 3 if args.quick else 9
    started = time.perf_counter()
    only = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    results = json.loads(Path(args.out).read_text()) if args.only and Path(args.out).is_file() else {}
    results.update({"machine": machine_name(), "torch": torch.__version__, "repeats": repeats})
    for name in only:
        results[name] = SECTIONS[name](repeats, args.quick)
    results["seconds"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\n({results['seconds']:.0f} s; written to {args.out})")


if __name__ == "__main__":
    main()
