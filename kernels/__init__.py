"""Sparse-attention kernels (block top-k decode attention) for long rollouts.

Empty for now: the kernels, their torch reference and the HFBackend integration are
tracked as their own issue. Nothing here is imported by the rest of ttscale.
"""
