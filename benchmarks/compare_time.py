"""How long a full `nanogpt compare` takes at the default size, as a user runs it (a fresh process each time).

    python benchmarks/compare_time.py [--repeats 3] [--baseline DIR]

- "full": `nanogpt compare --use reference`: every component's checks and isolation, the model probes and 50 training
  steps of both models (everything passes, so no ladder runs);
- "every ladder": the same with one mutant per component swapped in (tests/plugins/wrong_impls.py), so every check
  fails and every component's diagnosis ladder runs: the slowest a compare gets;
- with --baseline DIR (a folder holding another version's nanogpt_core, nanogpt_cli and nanogpt_impls packages,
  e.g. links into an older checkout), "full" on that version too, interleaved, and the ratio.

Runs interleave (A, B, A, B, ...) and report medians, so a busy spell on a shared machine hits every side alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = [sys.executable, "-m", "nanogpt_cli", "compare", "--use", "reference", "--device", "cpu", "--json", "-"]
ONE_MUTANT_PER_COMPONENT = ("bug-rotary-interleaved:rotary,bug-no-softmax-scale:attention,bug-norm-large-eps:norm,"
                            "bug-mlp-gelu:mlp,bug-post-norm:block,bug-init-std:init,"
                            "bug-optimizer-default-betas:optimizer,bug-temperature:generate")
EVERY_LADDER = [sys.executable, "-c",
                "import sys; sys.path.insert(0, 'tests'); from plugins.wrong_impls import WrongImplsPlugin; "
                "from nanogpt_core.model.registry import register_plugin; "
                "register_plugin(WrongImplsPlugin(), name='bugs'); from nanogpt_core.compare import compare; "
                f"r = compare({ONE_MUTANT_PER_COMPONENT!r}, device='cpu'); "
                "assert all(v.status == 'fail' for v in r.components), [v.status for v in r.components]"]


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=command[-1] != "-", stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    runs: dict[str, tuple[list[str], dict[str, str] | None]] = {"full": (FULL, None), "every ladder": (EVERY_LADDER,
                                                                                                        None)}
    if args.baseline:
        env = dict(os.environ, PYTHONPATH=str(args.baseline.resolve()))
        runs["full (baseline)"] = (FULL, env)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (command, env) in runs.items():
            times[name].append(timed(command, env))
    cores = os.cpu_count()
    print(f"{cores} CPU cores; median of {args.repeats} interleaved runs, each a fresh process:")
    for name, values in times.items():
        print(f"  {name:18s} {statistics.median(values):6.1f} s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    if args.baseline:
        ratio = statistics.median(times["full"]) / statistics.median(times["full (baseline)"])
        print(f"  full / baseline    {ratio:6.2f}")


if __name__ == "__main__":
    main()
