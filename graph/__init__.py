"""The research graph: state, configuration, builder, runners, trajectory recording.

Names are imported on first use (PEP 562), so `sleuth --help` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_research_graph": "graph.builder", "ResearchConfig": "graph.config",
    "TrajectoryRecorder": "graph.recording", "Report": "graph.report",
    "write_report": "graph.report", "ResearchResult": "graph.run",
    "aresearch": "graph.run", "research": "graph.run", "research_many": "graph.run",
    "ResearchOutput": "graph.state", "ResearchState": "graph.state",
    "TrajectoryStore": "graph.store", "ModelStep": "graph.trajectory",
    "ToolStep": "graph.trajectory", "Trajectory": "graph.trajectory",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'graph' has no attribute {name!r}")
