"""Planning: derive every training setting from a dataset fingerprint, by nnU-Net v2's rules, with reasons.

``plan(fingerprint, *, gpu_memory_gb=None, preset=None) -> Plan``. Modules, in reading order:

- ``settings``: nnU-Net's numbers (reference VRAM, anisotropy threshold...), each with why and where from, and the
  named presets (``nnunet-default``, ``colab-t4``, ``cpu``).
- ``topology``: the U-Net's shape for a patch (poolings, kernels) and nnU-Net's memory estimate.
- ``decisions``: one small function per decision, each returning its value and a :class:`Decision`.
- ``planner``: :func:`plan`, which calls the decisions in nnU-Net's order.
- ``explain``: text and HTML explanations; ``compare``: field-by-field comparison with nnU-Net's plans.
- ``what_if``: the same rules on variants of a real fingerprint (thick slices, large images), side by side.
"""

from tutorseg.planning.artefacts import ConfigurationPlan, Decision, Plan
from tutorseg.planning.compare import PlanComparison, compare_with_nnunet
from tutorseg.planning.explain import diff_plans
from tutorseg.planning.planner import plan
from tutorseg.planning.settings import PRESETS, PlannerSettings, Preset

__all__ = ["ConfigurationPlan", "Decision", "Plan", "PlanComparison", "PlannerSettings", "Preset", "PRESETS",
           "compare_with_nnunet", "diff_plans", "plan"]
