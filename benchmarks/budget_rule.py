"""The scaling rule `nanogpt train --time` chooses by, fitted to measured runs.

    python benchmarks/time_to_quality.py --runs '' --run d3_2M="--depth 3 --num-iterations 488" ... --out grid.json
    python benchmarks/budget_rule.py grid.json [more.json ...] [--out benchmarks/budget_rule.json]

Every run of the grid is a `nanogpt train` of some depth for some number of tokens on tinyshakespeare's first 90%,
scored on the held-out last 10% in bits per byte (benchmarks/time_to_quality.py). The rule is Chinchilla's form

    L(N, D) = E + A / N^alpha + B / D'^beta,   D' = U + U R* (1 - exp(-(D/U - 1) / R*))   (D > U)

with N the parameters the model multiplies by (all but the token embedding), D the tokens trained on, U the unique
tokens of the training text and R* = 15.4 the repeat scale of Muennighoff et al. (2023). For each (alpha, beta) on a
grid, E, A and B are the least-squares solution (the model is linear in them); the pair with the smallest residual
wins. The fitted constants go into `nanogpt_core/train/budget.py` (RULE_*); the output lists each run's measured
and fitted bits per byte, so a reader sees how well five numbers describe the grid.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nanogpt_core.train.budget import REPEAT_DECAY, effective_tokens  # noqa: E402

WIDTH_PER_LAYER = 64


def load_runs(paths: list[str]) -> list[dict]:
    runs = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        for run in data["runs"]:
            width = WIDTH_PER_LAYER * run["depth"]
            runs.append({**run, "params": run["num_params"] - run["vocab_size"] * width,
                         "unique": run.get("train_tokens") or data.get("train_tokens")})
    missing = [r["name"] for r in runs if not r["unique"]]
    if missing:
        raise SystemExit(f"runs without their training-token count (rerun them with this benchmark): {missing}")
    return runs


def fit(runs: list[dict]) -> dict:
    n = np.array([r["params"] for r in runs], dtype=float)
    d = np.array([effective_tokens(r["tokens"], r["unique"]) for r in runs], dtype=float)
    y = np.array([r["held_out_bpb"] for r in runs], dtype=float)
    best = None
    for alpha in np.arange(0.02, 1.5, 0.01):
        for beta in np.arange(0.02, 1.5, 0.01):
            design = np.stack([np.ones_like(n), n ** -alpha, d ** -beta], axis=1)
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            if coef[1] < 0 or coef[2] < 0:
                continue  # more parameters or tokens must not hurt
            residual = float(np.sum((design @ coef - y) ** 2))
            if best is None or residual < best["residual"]:
                best = {"E": float(coef[0]), "A": float(coef[1]), "alpha": float(alpha), "B": float(coef[2]),
                        "beta": float(beta), "residual": residual}
    best["rms_bpb"] = (best["residual"] / len(runs)) ** 0.5
    best["repeat_decay"] = REPEAT_DECAY
    return best


def predict(rule: dict, params: float, tokens: float, unique: float) -> float:
    effective = effective_tokens(tokens, unique)
    return rule["E"] + rule["A"] / params ** rule["alpha"] + rule["B"] / effective ** rule["beta"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="time_to_quality.py JSON files of the grid's runs")
    parser.add_argument("--runs", default=".", help="a regular expression: fit only the runs whose names match")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    runs = [r for r in load_runs(args.results) if re.search(args.runs, r["name"])]
    rule = fit(runs)
    rows = []
    print("| run | depth | params | tokens | epochs | held-out bpb | fitted |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["depth"], r["tokens"])):
        fitted = predict(rule, r["params"], r["tokens"], r["unique"])
        rows.append({"name": r["name"], "depth": r["depth"], "params": r["params"], "tokens": r["tokens"],
                     "unique": r["unique"], "held_out_bpb": r["held_out_bpb"], "fitted_bpb": fitted})
        print(f"| {r['name']} | {r['depth']} | {r['params'] / 1e6:.2f}M | {r['tokens'] / 1e6:.2f}M | "
              f"{r['tokens'] / r['unique']:.1f} | {r['held_out_bpb']:.3f} | {fitted:.3f} |")
    print(f"\nL = {rule['E']:.3f} + {rule['A']:.4g} / N^{rule['alpha']:.2f} + {rule['B']:.4g} / D'^{rule['beta']:.2f} "
          f"(bits per byte; rms error {rule['rms_bpb']:.4f} over {len(runs)} runs)")
    Path(args.out).write_text(json.dumps({"rule": rule, "runs": rows}, indent=2) + "\n")
    print(f"(written to {args.out})")


if __name__ == "__main__":
    main()
