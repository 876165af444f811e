"""Training data for routers: graded outcomes of several arms, as an :class:`OutcomeTable`.

The readers (outcome store, long JSONL/CSV, RouteLLM's wide CSV) and their rules live in
:mod:`effreason_agents.evaluation.outcomes`, shared with replay; this module gives them the
names the training code and the ``effreason router`` commands use. :class:`RouterDataError`
is the readers' :class:`~effreason_agents.evaluation.outcomes.OutcomeDataError`.
"""

from __future__ import annotations

from effreason_agents.evaluation.outcomes import (
    FORMATS,
    OutcomeDataError,
    OutcomeTable,
    infer_format,
    load_long,
    load_store,
    load_table,
    load_wide,
    parse_bool,
    select_arms,
)

__all__ = [
    "FORMATS",
    "OutcomeTable",
    "RouterDataError",
    "infer_format",
    "load_long",
    "load_store",
    "load_table",
    "load_wide",
    "parse_bool",
    "select_arms",
]

RouterDataError = OutcomeDataError
