"""A shrunken plan for smoke runs: the same pipeline in seconds on a CPU (notebooks' ``SMOKE`` mode, the tests).

Not for results: fewer stages, fewer features and a small patch make a network that trains fast and learns little.
"""

from __future__ import annotations

import dataclasses
import math


def smoke_plan(plan, configuration: str | None = None, *, n_stages: int = 3, max_features: int = 16,
               patch_size=None, batch_size: int = 2):
    """The plan with one configuration shrunk to a tiny network.

    Args:
        plan: a :class:`tutorseg.planning.Plan`.
        configuration: which configuration to shrink (default: the plan's default).
        n_stages: keep the first ``n_stages`` resolution stages (at least 2).
        max_features: cap on the features per stage.
        patch_size: the new patch (rounded up to a multiple of the network's total stride per axis); default: 32 per
            axis in 3D, 64 in 2D, but not beyond the planned patch.
        batch_size: samples per batch.

    Returns:
        A new Plan (the other configurations unchanged).
    """
    name = configuration or plan.default_configuration
    c = plan[name]
    keep = max(2, min(n_stages, len(c.strides)))
    strides = tuple(tuple(s) for s in c.strides[:keep])
    total = [math.prod(s[axis] for s in strides) for axis in range(len(c.patch_size))]
    if patch_size is None:
        side = 32 if len(c.patch_size) == 3 else 64
        patch_size = [max(t, min(side, p)) for t, p in zip(total, c.patch_size)]
    patch = tuple(int(math.ceil(p / t) * t) for p, t in zip(patch_size, total))
    small = dataclasses.replace(
        c, patch_size=patch, batch_size=int(batch_size), n_stages=keep,
        features_per_stage=tuple(min(int(f), max_features) for f in c.features_per_stage[:keep]),
        kernel_sizes=tuple(tuple(k) for k in c.kernel_sizes[:keep]), strides=strides,
        n_conv_per_stage=tuple(c.n_conv_per_stage[:keep]), n_conv_per_stage_decoder=tuple(
            c.n_conv_per_stage_decoder[:keep - 1]), n_blocks_per_stage=tuple(c.n_blocks_per_stage[:keep]))
    return dataclasses.replace(plan, configurations={**plan.configurations, name: small})
