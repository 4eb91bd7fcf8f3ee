"""Every strategy except ``auto``, by registry name, and the one way to build one by name.

``auto`` chooses among these (its policy names them), so it builds them from here rather
than from the full registry in ``ttscale.strategies``, which itself contains ``auto``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.beam_search import DVTS, BeamSearch
from ttscale.strategies.best_of_n import BestOfN
from ttscale.strategies.code import CodeSelect
from ttscale.strategies.particle_filter import ParticleFilter
from ttscale.strategies.pdr import PDR, SequentialRefine
from ttscale.strategies.program import HybridVote, ProgramOfThought
from ttscale.strategies.tir import ToolIntegrated
from ttscale.strategies.tree_search import ETS

__all__ = ["BASE_STRATEGIES", "build_strategy"]

BASE_STRATEGIES: dict[str, type] = {
    "best_of_n": BestOfN,
    "beam_search": BeamSearch,
    "dvts": DVTS,
    "particle_filter": ParticleFilter,
    "pdr": PDR,
    "sequential_refine": SequentialRefine,
    "ets": ETS,
    "program": ProgramOfThought,
    "tir": ToolIntegrated,
    "hybrid": HybridVote,
    "code": CodeSelect,
}


def build_strategy(name: str, options: Mapping[str, Any], table: Mapping[str, type]) -> Any:
    """Instantiate ``table[name]`` with ``options`` (its dataclass fields).

    Raises:
        ConfigError: Unknown strategy or option (listing what is accepted), or a bad value.
    """
    cls = table.get(name)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(table)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(
            f"strategy {name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(fields))}"
        )
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from None
