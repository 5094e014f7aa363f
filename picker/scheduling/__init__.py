"""Endpoint scheduling: pure filters, scorers and a picker over an immutable snapshot, plus admission."""

from picker.scheduling.build import build_scheduler
from picker.scheduling.config import DEFAULT_CONFIG, SchedulerConfig, load_config, parse_config
from picker.scheduling.framework import CycleState, Filter, Picker, Scheduler, Scorer, WeightedScorer
from picker.scheduling.params import ConfigError
from picker.scheduling.prefix_index import PrefixIndex, prompt_hashes
from picker.scheduling.types import EndpointSnapshot

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "CycleState",
    "EndpointSnapshot",
    "Filter",
    "Picker",
    "PrefixIndex",
    "Scheduler",
    "SchedulerConfig",
    "Scorer",
    "WeightedScorer",
    "build_scheduler",
    "load_config",
    "parse_config",
    "prompt_hashes",
]
