"""The one dict from a --method name to its baseline class."""
from __future__ import annotations

from typing import Dict, Type

from dad_edge.baselines.base import BaselineDetector
from dad_edge.baselines.copod import CopodBaseline
from dad_edge.baselines.iforest import IsolationForestBaseline
from dad_edge.baselines.ocsvm import OneClassSVMBaseline
from dad_edge.errors import ConfigError

METHODS: Dict[str, Type[BaselineDetector]] = {
    cls.name: cls for cls in (IsolationForestBaseline, OneClassSVMBaseline, CopodBaseline)}


def method_class(name: str) -> Type[BaselineDetector]:
    if name not in METHODS:
        raise ConfigError(f"unknown baseline method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]
