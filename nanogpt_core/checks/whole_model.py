"""Contract checks that need the assembled GPT: the component under test inside a model whose other components are
reference. Covers init, optimizer and generate (which act on the whole model) and, for the module components, what
only shows in the model: causality end to end, gradients to every parameter, the KV cache past the training length,
and buffers that follow the model's device."""

from __future__ import annotations

import math

import torch

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import Check, causality, kv_cache_consistency, result
from nanogpt_core.checks.optimizer_updates import KIND_LABEL, expected_kind, kind_scores, trace_updates, update_kind
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.sampling import (
    FALSE_ALARM,
    PROMPT,
    SAMPLES,
    TEMPERATURES,
    TOP_K_SETTINGS,
    chi_square_p,
    contract_distribution,
    generation_model,
    next_logits,
    samples,
)
from nanogpt_core.checks.top_level import GPT_CHECKS, softcap_saturation
from nanogpt_core.model.assembly import optimizer_coverage as parameters_outside_one_group
from nanogpt_core.model.contracts import LOGIT_SOFTCAP

ZERO_INIT = ("c_proj", "lm_head")


def model_forward(b: Bench) -> CheckResult:
    model = b.model()
    idx = b.tokens()
    logits = model(idx)
    shape = (*idx.shape, b.config.vocab_size)
    if tuple(logits.shape) != shape:
        return result("model forward", False, f"logits {tuple(logits.shape)}, expected {shape}",
                      {"shape": list(logits.shape)}, "wrong shape")
    loss = model(idx, idx)
    if not (torch.isfinite(logits).all() and torch.isfinite(loss)):
        return result("model forward", False, "logits or loss contain NaN/Inf", {"loss": loss.item()}, "NaN/Inf")
    return result("model forward", True, f"logits {shape}, loss {loss.item():.3f}", {"loss": loss.item()})


def model_causal(b: Bench) -> CheckResult:
    model = b.model()

    def perturb(idx: torch.Tensor, t: int) -> torch.Tensor:
        idx2 = idx.clone()
        idx2[:, t + 1 :] = (idx2[:, t + 1 :] + 1 + t) % b.config.vocab_size
        return idx2

    return causality("model causal", model, b.tokens(), perturb)


def model_gradients(b: Bench) -> CheckResult:
    """Under PyTorch's default init (not the zeroed one, which blocks gradients at step 0) every parameter of the
    model must receive a finite, non-zero gradient."""
    model = b.model()
    idx = b.tokens()
    model(idx, idx.roll(-1, dims=1)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum().item() > 0]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    numbers = {"parameters": sum(1 for _ in model.parameters()), "zero_or_missing": missing, "non_finite": bad}
    if bad:
        return result("model gradients", False, f"non-finite gradients: {', '.join(bad)}", numbers, "NaN/Inf")
    if missing:
        return result("model gradients", False, f"no gradient reaches {', '.join(missing)}", numbers,
                      "zero or missing gradients")
    return result("model gradients", True, f"all {numbers['parameters']} parameters get finite, non-zero gradients",
                  numbers)


def model_kv_cache(b: Bench) -> CheckResult:
    """Decode with the cache up to 8 positions past the training length (the rotary table covers 10x)."""
    model = b.model()
    total = b.config.sequence_len + 8
    idx = b.tokens(batch=1, seq_len=total)
    cache = model.new_kv_cache(1, total)
    return kv_cache_consistency("model KV cache past the training length", lambda: model(idx),
                                lambda t0, t1: model(idx[:, t0:t1], kv_cache=cache), total,
                                prefill=b.config.sequence_len - 4)


def model_devices(b: Bench) -> CheckResult:
    """Built under a device context, every parameter and buffer must land there ('meta' stands in for a GPU)."""
    model = b.model(device="meta")
    wrong = [f"{n} on {t.device}" for n, t in [*model.named_parameters(), *model.named_buffers()]
             if t.device.type != "meta"]
    if wrong:
        return result("buffers follow the model's device", False, "built on 'meta', but " + ", ".join(wrong),
                      {"wrong": wrong}, "buffers on the wrong device or dtype")
    return result("buffers follow the model's device", True, "every parameter and buffer is created on the model's "
                  "device")


def softcap_probe(model: torch.nn.Module, idx: torch.Tensor) -> CheckResult:
    """Blow the head up: capped logits saturate, uncapped ones grow with it. Any cap passes this probe (the gpt's
    own check holds a re-implementation to the contract's 15; another design may choose another)."""
    small, large = softcap_saturation(model, idx)
    numbers = {"max_abs_logit": large, "softcap": LOGIT_SOFTCAP}
    return result("softcap", large <= 1.5 * small, f"with a huge lm_head the largest |logit| is {large:.3g} "
                  f"(softcap {LOGIT_SOFTCAP:g})", numbers, "missing softcap")


# --- init -----------------------------------------------------------------------------------------------------------


def _initialised(b: Bench):
    model = b.model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # anything init forgets stays NaN
    model.init_weights()
    return model


def init_every_parameter(b: Bench) -> CheckResult:
    model = _initialised(b)
    unset = [n for n, p in model.named_parameters() if torch.isnan(p).any()]
    return result("every parameter set", not unset, "no parameter left uninitialised" if not unset else
                  f"still uninitialised: {', '.join(unset)}", {"unset": unset}, "parameter left uninitialised")


def init_std(b: Bench) -> CheckResult:
    """Std within a few percent of the formula (sampling error 1/sqrt(2N) allowed 4 times over)."""
    model = _initialised(b)
    worst, rows = 0.0, {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in ZERO_INIT:
            fan_out, fan_in = module.weight.shape
            expected = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
        elif isinstance(module, torch.nn.Embedding):
            expected = 1.0
        else:
            continue
        w = module.weight.detach().double()
        tol = 4 / math.sqrt(2 * w.numel()) + 0.01
        err = abs(w.std().item() / expected - 1)
        rows[name] = {"std": w.std().item(), "expected": expected, "rel_error": err, "tolerance": tol}
        if err > tol:
            worst = max(worst, err / tol)
    bad = [n for n, r in rows.items() if r["rel_error"] > r["tolerance"]]
    detail = (f"{len(rows)} weights within tolerance of the formula" if not bad else
              "; ".join(f"{n}: std {rows[n]['std']:.4f}, expected {rows[n]['expected']:.4f}" for n in bad[:4]))
    return result("init std", not bad, detail, {"weights": rows}, "wrong init std")


def init_normal(b: Bench) -> CheckResult:
    """The contract draws from a normal distribution: excess kurtosis 0 (uniform: -1.2). The estimate's standard
    error is sqrt(24 / N); more than 6 of those (a false alarm on < 1e-8 of weights) is another distribution."""
    model = _initialised(b)
    rows, bad = {}, []
    for name, p in model.named_parameters():
        if p.ndim != 2 or any(part in ZERO_INIT for part in name.split(".")) or not (p != 0).any():
            continue
        w = p.detach().double().flatten()
        z = (w - w.mean()) / w.std()
        kurtosis = (z.pow(4).mean() - 3).item()
        limit = 6 * math.sqrt(24 / w.numel())
        rows[name] = {"excess_kurtosis": kurtosis, "limit": limit}
        if abs(kurtosis) > limit:
            bad.append(name)
    detail = ("every random weight is normal (excess kurtosis within 6 standard errors of 0)" if not bad else
              "; ".join(f"{n}: excess kurtosis {rows[n]['excess_kurtosis']:.2f} (normal: 0 +- "
                        f"{rows[n]['limit'] / 6:.2f}; uniform: -1.2)" for n in bad[:3]))
    return result("normal draws", not bad, detail, {"weights": rows}, "init draws are not normal")


def init_zeros(b: Bench) -> CheckResult:
    model = _initialised(b)
    nonzero = [n for n, p in model.named_parameters()
               if any(part in ZERO_INIT for part in n.split(".")) and p.abs().max().item() != 0]
    return result("zeroed output projections", not nonzero, "lm_head and every c_proj are zero" if not nonzero else
                  f"not zero: {', '.join(nonzero)}", {"nonzero": nonzero}, "output projections not zero-initialised")


def init_first_loss(b: Bench) -> CheckResult:
    model = _initialised(b)
    idx = b.tokens()
    loss = model(idx, idx.roll(-1, dims=1)).item()
    expected = math.log(b.config.vocab_size)
    err = abs(loss - expected)
    numbers = {"loss": loss, "expected": expected, "abs_error": err, "tolerance": 1e-4}
    return result("first loss = ln(vocab)", err <= 1e-4, f"first loss {loss:.6f}, ln({b.config.vocab_size}) = "
                  f"{expected:.6f}", numbers, "output projections not zero-initialised")


# --- optimizer ------------------------------------------------------------------------------------------------------


def _optimizers(b: Bench):
    model = b.model()  # PyTorch's default init: every parameter non-zero, so one step moves all of them
    return model, model.setup_optimizers()


def optimizer_coverage(b: Bench) -> CheckResult:
    model, optimizers = _optimizers(b)
    missing, twice = parameters_outside_one_group(model, optimizers)
    trainable = [p for p in model.parameters() if p.requires_grad]
    numbers = {"trainable": len(trainable), "missing": missing, "in_two_groups": twice}
    if missing:
        return result("every parameter in one group", False, f"not in any group: {', '.join(missing)}", numbers,
                      "parameter missing from optimizer groups")
    if twice:
        return result("every parameter in one group", False, f"in more than one group: {', '.join(twice)}", numbers,
                      "parameter in two optimizer groups")
    return result("every parameter in one group", True, f"all {len(trainable)} trainable parameters, once each",
                  numbers)


def optimizer_group_fields(b: Bench) -> CheckResult:
    _, optimizers = _optimizers(b)
    groups = [(type(opt).__name__, i, g) for opt in optimizers for i, g in enumerate(opt.param_groups)]
    no_lr = [f"{name}[{i}]" for name, i, g in groups if "initial_lr" not in g]
    if no_lr:
        return result("group fields", False, f"no 'initial_lr' in {', '.join(no_lr)}", {"groups": len(groups)},
                      "optimizer group without initial_lr")
    no_momentum = [f"{name}[{i}]" for name, i, g in groups if name == "Muon" and "momentum" not in g]
    if no_momentum:
        return result("group fields", False, f"no 'momentum' in {', '.join(no_momentum)}", {"groups": len(groups)},
                      "Muon group without momentum")
    return result("group fields", True, f"{len(groups)} groups, each with 'initial_lr'", {"groups": len(groups)})


def optimizer_partition(b: Bench) -> CheckResult:
    """Which optimizer updates each parameter, read from its first update under designed gradients (an
    orthogonalised matrix is Muon's, +-lr AdamW's): block matrices must get Muon's, everything else AdamW's. A
    block matrix whose update is closest to Muon's but not orthogonalised as far (cosine < KIND_THRESHOLD with 5
    quintic Newton-Schulz steps) has a Muon with other Newton-Schulz steps or coefficients."""
    model, optimizers = _optimizers(b)
    trace = trace_updates(model, optimizers)
    kinds = {n: update_kind(trace, n) for n in trace.names}
    wrong = {n: k for n, k in kinds.items() if k not in ("none", expected_kind(n, trace.shapes[n]))}
    numbers = {"kinds": kinds, "wrong": wrong}
    if not wrong:
        return result("Muon for block matrices, AdamW for the rest", True, f"{len(kinds)} parameters, each updated "
                      "by the optimizer the contract gives it", numbers)
    scores = {n: kind_scores(trace.updates[n][0], trace.grads[n][0], trace.roles[n], trace.start[n]) for n in wrong}
    partial = {n: s["muon"] for n, s in scores.items() if expected_kind(n, trace.shapes[n]) == "muon"
               and wrong[n] == "other" and s.get("muon", 0) == max(s.values())}
    if partial and len(partial) == len(wrong):
        n, cosine = min(partial.items(), key=lambda item: item[1])
        return result("Muon for block matrices, AdamW for the rest", False, f"{n}'s update is only partly "
                      f"orthogonalised: cosine {cosine:.3f} with 5 quintic Newton-Schulz steps of its gradient "
                      f"(a correct Muon: > 0.999)", numbers, "Muon's Newton-Schulz differs")
    text = "; ".join(f"{n} gets {KIND_LABEL[k]} updates (the contract: {KIND_LABEL[expected_kind(n, trace.shapes[n])]})"
                     for n, k in list(wrong.items())[:3]) + (f"; {len(wrong) - 3} more" if len(wrong) > 3 else "")
    return result("Muon for block matrices, AdamW for the rest", False, text, numbers,
                  "parameters in the wrong optimizer")


def optimizer_step(b: Bench) -> CheckResult:
    model, optimizers = _optimizers(b)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    idx = b.tokens()
    model(idx, idx.roll(-1, dims=1)).backward()
    for opt in optimizers:
        opt.step()
    still = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    return result("one step moves every parameter", not still, "every parameter changed after one step"
                  if not still else f"unchanged after one step: {', '.join(still)}", {"unchanged": still},
                  "optimizer step leaves parameters unchanged")


# --- generate -------------------------------------------------------------------------------------------------------


def generate_form(b: Bench) -> CheckResult:
    model = generation_model(b)
    out = list(model.generate(PROMPT, 6, temperature=1.0, seed=1))
    ok = len(out) == 6 and all(isinstance(t, int) and 0 <= t < b.config.vocab_size for t in out)
    return result("yields max_tokens ints", ok, f"generate(max_tokens=6) yielded {out!r}", {"tokens": out},
                  "generate yields wrong tokens")


def generate_reproducible(b: Bench) -> CheckResult:
    model = generation_model(b)
    torch.manual_seed(123)
    a = list(model.generate(PROMPT, 12, temperature=1.0, seed=9))
    torch.manual_seed(456)  # a generate that samples from the global RNG gives itself away here
    c = list(model.generate(PROMPT, 12, temperature=1.0, seed=9))
    return result("seeded reproducibility", a == c, "the same seed gave the same tokens" if a == c else
                  f"seed 9 gave {a} then {c}", {"first": a, "second": c}, "generation not reproducible")


def generate_greedy(b: Bench) -> CheckResult:
    """Temperature 0 with the cache must equal argmax over a full forward of the whole prefix at every step."""
    model = generation_model(b)
    try:
        got = list(model.generate(PROMPT, 12, temperature=0.0))
    except Exception as exc:  # a sampler that divides by the temperature: 0 is not special-cased
        return result("greedy = argmax of the full forward", False, f"temperature 0 raised {type(exc).__name__}: "
                      f"{exc}: at 0, take the argmax instead of dividing by the temperature", {},
                      "greedy generation differs from argmax")
    tokens, expected = list(PROMPT), []
    for _ in range(12):
        nxt = int(next_logits(model, tokens).argmax())
        expected.append(nxt)
        tokens.append(nxt)
    first_diff = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), None)
    ok = got == expected
    return result("greedy = argmax of the full forward", ok, "12 greedy tokens match" if ok else
                  f"greedy tokens {got} differ from argmax {expected} from step {first_diff}",
                  {"generated": got, "expected": expected}, "greedy generation differs from argmax")


def _distribution_check(b: Bench, name: str, settings, diagnosis: str) -> CheckResult:
    rows = {}
    for temperature, top_k in settings:
        counts, logits = samples(b, temperature, top_k)
        p = chi_square_p(counts, contract_distribution(logits, temperature, top_k))
        rows[f"T={temperature:g}" + (f", top_k={top_k}" if top_k else "")] = p
    worst = min(rows, key=rows.get)
    numbers = {"p_values": rows, "false_alarm_rate": FALSE_ALARM, "samples": SAMPLES}
    ok = rows[worst] >= FALSE_ALARM
    return result(name, ok, f"{SAMPLES} first tokens per setting follow softmax(logits / T) (lowest p = "
                  f"{rows[worst]:.2g} at {worst})" if ok else f"at {worst} the {SAMPLES} samples are not from "
                  f"softmax(logits / T){' over the top_k' if 'top_k' in worst else ''}: chi-square p = "
                  f"{rows[worst]:.2g} < {FALSE_ALARM:g}", numbers, diagnosis)


def generate_temperature(b: Bench) -> CheckResult:
    """At temperatures 0.5, 1 and 2 the first token's frequencies must follow softmax(logits / T)."""
    return _distribution_check(b, "samples follow softmax(logits / T)", [(t, None) for t in TEMPERATURES],
                               "sample distribution differs from softmax(logits / T)")


def generate_top_k(b: Bench) -> CheckResult:
    """With top_k at temperatures 0.5 and 2: softmax(logits / T) over the top_k largest logits, nothing else."""
    return _distribution_check(b, "top_k samples follow softmax(top_k logits / T)", TOP_K_SETTINGS,
                               "top_k keeps the wrong tokens")


MODEL_CHECKS: dict[str, list[Check]] = {
    "init": [init_every_parameter, init_std, init_normal, init_zeros, init_first_loss],
    "optimizer": [optimizer_coverage, optimizer_group_fields, optimizer_partition, optimizer_step],
    "generate": [generate_form, generate_reproducible, generate_greedy, generate_temperature, generate_top_k],
}
# module components are also checked inside the assembled model
IN_MODEL_CHECKS: list[Check] = [model_forward, model_causal, model_gradients, model_kv_cache, model_devices]
MODEL_CHECKS["gpt"] = [*GPT_CHECKS, *IN_MODEL_CHECKS]  # the top level: its own contract, then what the model promises
