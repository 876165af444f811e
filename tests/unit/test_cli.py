"""CLI helpers that need no model."""

from __future__ import annotations


def test_demo_states_the_threshold_in_use() -> None:
    from effreason_agents.cli import _threshold_text
    from effreason_agents.config import config_from_data, default_config_data

    data = default_config_data()
    assert "calibrated" in _threshold_text(config_from_data(data, source="t")) and "0.5" in _threshold_text(
        config_from_data(data, source="t"))
    data.setdefault("escalation", {})["confidence_threshold"] = 0.4
    assert _threshold_text(config_from_data(data, source="t")) == "0.4"
