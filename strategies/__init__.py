"""Test-time scaling strategies, registered by name.

``STRATEGIES`` is the one registry the Python API, the CLI and the server read. Each
strategy is a frozen dataclass whose fields are its hyper-parameters; ``make_strategy``
validates options against them.
"""

from __future__ import annotations

from typing import Any

from ttscale.strategies.allocation.auto import Auto
from ttscale.strategies.beam_search import DVTS, BeamSearch
from ttscale.strategies.best_of_n import BestOfN
from ttscale.strategies.catalog import BASE_STRATEGIES, build_strategy
from ttscale.strategies.code import CodeSelect
from ttscale.strategies.particle_filter import ParticleFilter
from ttscale.strategies.pdr import PDR, SequentialRefine
from ttscale.strategies.program import HybridVote, ProgramOfThought
from ttscale.strategies.tir import ToolIntegrated
from ttscale.strategies.tree_search import ETS

__all__ = [
    "DVTS",
    "Auto",
    "ETS",
    "PDR",
    "STRATEGIES",
    "BeamSearch",
    "BestOfN",
    "CodeSelect",
    "HybridVote",
    "ParticleFilter",
    "ProgramOfThought",
    "SequentialRefine",
    "ToolIntegrated",
    "make_strategy",
]

STRATEGIES: dict[str, type] = {**BASE_STRATEGIES, "auto": Auto}


def make_strategy(name: str, **options: Any) -> Any:
    """Instantiate a registered strategy.

    Raises:
        ConfigError: Unknown strategy or option (listing what is accepted), or a bad value.
    """
    return build_strategy(name, options, STRATEGIES)
