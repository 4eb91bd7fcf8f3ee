"""Test-time scaling strategies, registered by name.

``STRATEGIES`` is the one registry the Python API, the CLI and the server read. Each
strategy is a frozen dataclass whose fields are its hyper-parameters; ``make_strategy``
validates options against them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ttscale.errors import ConfigError
from ttscale.strategies.auto import Auto
from ttscale.strategies.beam_search import DVTS, BeamSearch
from ttscale.strategies.best_of_n import BestOfN
from ttscale.strategies.particle_filter import ParticleFilter
from ttscale.strategies.pdr import PDR, SequentialRefine
from ttscale.strategies.tree_search import ETS

__all__ = [
    "DVTS",
    "Auto",
    "ETS",
    "PDR",
    "STRATEGIES",
    "BeamSearch",
    "BestOfN",
    "ParticleFilter",
    "SequentialRefine",
    "make_strategy",
]

STRATEGIES: dict[str, type] = {
    "best_of_n": BestOfN,
    "beam_search": BeamSearch,
    "dvts": DVTS,
    "particle_filter": ParticleFilter,
    "pdr": PDR,
    "sequential_refine": SequentialRefine,
    "ets": ETS,
    "auto": Auto,
}


def make_strategy(name: str, **options: Any) -> Any:
    """Instantiate a registered strategy.

    Raises:
        ConfigError: Unknown strategy or option (listing what is accepted), or a bad value.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
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
