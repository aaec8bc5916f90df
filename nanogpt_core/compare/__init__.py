"""`nanogpt compare` as a library: `compare(use="student:attention", steps=50) -> Report`."""

from nanogpt_core.compare.curves import default_compare_config
from nanogpt_core.compare.report import ComponentVerdict, Curve, Report, TrainingComparison
from nanogpt_core.compare.run import compare

__all__ = ["ComponentVerdict", "Curve", "Report", "TrainingComparison", "compare", "default_compare_config"]
