"""The import path the README documents (`dad_edge.ops.available()`); the operator seam lives in
dad_edge/runtime/ops.py. This module is that module, not a copy."""
import sys

from dad_edge.runtime import ops as _ops

sys.modules[__name__] = _ops
