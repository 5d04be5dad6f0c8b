"""Planning: derive every training setting from a dataset fingerprint, by nnU-Net v2's rules, with reasons.

``plan(fingerprint, *, gpu_memory_gb=8, preset=None) -> Plan``. Modules, in reading order:

- ``constants``: nnU-Net's numbers (reference VRAM, anisotropy threshold...), each with why and where from.
- ``topology``: the U-Net's shape for a patch (poolings, kernels) and nnU-Net's memory estimate.
- ``decisions``: one small function per decision, each returning its value and a :class:`Decision`.
- ``planner``: :func:`plan`, which calls the decisions in nnU-Net's order.
- ``presets``: named hardware targets (``nnunet-default``, ``colab-t4``, ``cpu``).
- ``explain``: text and HTML explanations; ``compare``: field-by-field comparison with nnU-Net's plans.
"""

from .artefacts import ConfigurationPlan, Decision, Plan

__all__ = ["ConfigurationPlan", "Decision", "Plan"]
