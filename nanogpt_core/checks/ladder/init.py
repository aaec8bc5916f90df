"""Init's ladder: what is left unset, what is zero that must not be (and the reverse), the distribution's shape,
then its scale."""

from __future__ import annotations

from nanogpt_core.checks.harness import Bench
from nanogpt_core.checks.modules import result
from nanogpt_core.checks.result import CheckResult
from nanogpt_core.checks.whole_model import (
    ZERO_INIT,
    _initialised,
    init_every_parameter,
    init_first_loss,
    init_normal,
    init_std,
    init_zeros,
)


def random_weights_not_zero(b: Bench) -> CheckResult:
    """Only lm_head and the c_proj projections start at zero; a zeroed c_q, c_k, c_v or c_fc never gets a gradient
    through the zero it multiplies."""
    model = _initialised(b)
    zeroed = [n for n, p in model.named_parameters() if p.ndim == 2 and not (p != 0).any()
              and not any(part in ZERO_INIT for part in n.split("."))]
    return result("random weights are random", not zeroed, "every weight outside lm_head and c_proj is random"
                  if not zeroed else f"all zeros: {', '.join(zeroed[:4])}" + (" ..." if len(zeroed) > 4 else ""),
                  {"zeroed": zeroed}, "weights zeroed that must be random")


PROBES = (init_every_parameter, random_weights_not_zero, init_zeros, init_normal, init_std, init_first_loss)
