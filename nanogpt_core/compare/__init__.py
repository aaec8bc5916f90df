"""Comparing models: a component against the reference (`compare`, modes "equal" and "design"), your parts inside a
pretrained model (`compare_in_pretrained`), and designs trained side by side over seeds (`run_experiment`).

    from nanogpt_core.compare import compare
    report = compare(use="student:attention", steps=50)      # -> Report, verdict per component
"""

from nanogpt_core.compare.curves import default_compare_config
from nanogpt_core.compare.modes import MODES, PINNED_CHECKS
from nanogpt_core.compare.report import ComponentVerdict, Curve, Report, TrainingComparison
from nanogpt_core.compare.run import compare, design_checks

__all__ = ["MODES", "PINNED_CHECKS", "ComponentVerdict", "Curve", "Report", "TrainingComparison", "compare",
           "default_compare_config", "design_checks"]
