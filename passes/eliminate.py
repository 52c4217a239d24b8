"""Graph cleanup run after every structural pass.

onnx_ir's common passes already cover it; this module only fixes their order:
identities first (so the parameters behind them become unused), then dead nodes
and unused initializers, then a topological sort for the nodes passes inserted.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass, RemoveUnusedNodesPass, TopologicalSortPass

__all__ = ["cleanup_passes"]


def cleanup_passes() -> ir.passes.PassManager:
    """Identity elimination, dead-node and unused-initializer removal, topological sort."""
    return ir.passes.PassManager([IdentityEliminationPass(), RemoveUnusedNodesPass(), TopologicalSortPass()])
