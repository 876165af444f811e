"""Model-side efficient reasoning from the outcome log: training data and rewards.

* :mod:`effreason_agents.training.export` — SFT examples (the shortest correct trace per
  question) and DPO preference pairs from the graded benchmark attempts in the outcome
  store, as JSONL for TRL and OpenAI fine-tuning (``effreason export sft|dpo``).
* :mod:`effreason_agents.training.rewards` — correctness and length-penalised rewards
  (Kimi 1.5, L1) with TRL's ``reward_funcs`` signature.

Offline code: it imports the library; nothing in the library imports it.
"""

from __future__ import annotations

from effreason_agents.training.export import ExportSummary, Trace, collect_traces, export_store, export_traces
from effreason_agents.training.rewards import correctness_reward, kimi_length_reward, l1_length_reward

__all__ = [
    "ExportSummary",
    "Trace",
    "collect_traces",
    "correctness_reward",
    "export_store",
    "export_traces",
    "kimi_length_reward",
    "l1_length_reward",
]
