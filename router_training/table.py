"""The training data of a router: :class:`~effreason_agents.evaluation.outcomes.OutcomeTable`,
one row per unique prompt, one column per arm (defined with its readers in
:mod:`effreason_agents.evaluation.outcomes`, shared with replay)."""

from __future__ import annotations

from effreason_agents.evaluation.outcomes import OutcomeTable

__all__ = ["OutcomeTable"]
