"""Compute-optimal allocation (Snell et al. 2024): everything ``strategy="auto"`` and
``solve_batch`` use.

- ``allocator``: the probe, difficulty bins and the cost-model conversions;
- ``policy``: the (difficulty bin x budget level) -> strategy table, its loading, validation
  and fitting from calibration rows (``ttscale calibrate``);
- ``auto``: the ``auto`` strategy (probe -> bin -> policy -> strategy, early stop);
- ``batch``: many prompts under one shared budget (``solve_batch``);
- ``splits``: the calibration/evaluation problem splits, kept disjoint by assertion.
"""
