"""Small edits of an ONNX graph that more than one step of the export makes."""

from __future__ import annotations

import onnx


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename the tensor ``old`` to ``new`` wherever a node reads or writes it, so that nodes
    appended after it can give ``old`` (an output's name, which serving reads) to their own
    result; the graph's output list is not touched."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
