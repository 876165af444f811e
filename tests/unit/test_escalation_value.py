"""Escalation by value (``escalation.next = "value"``): the pure choice on scripted predictions,
the priors and costs it is fed, its configuration, and the graph escalating by value on
scripted tiers (``helpers.FakeTierClient``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from effreason_agents.config import ArmPrior, BudgetConfig, Config, LimitConfig, config_from_data, default_config_data
from effreason_agents.core.budget import Spend
from effreason_agents.engine import policy
from effreason_agents.errors import ConfigError
from effreason_agents.graph.nodes import ReasoningNodes, Services

from helpers import EASY, ENVIRON, FakeTierClient, large_reply, make_config, small_reply, unreachable

NO_LIMITS = BudgetConfig()


def arm(name: str, max_tokens: int = 24, *, samples: int = 1, prompt: int = 50, usd: str = "0.00001",
        model: str = "m") -> dict[str, Any]:
    tier, strategy = name.split(":")[:2]
    return {"name": name, "tier": tier, "model": model, "engine": "openai-compatible", "strategy": strategy,
            "max_tokens": max_tokens, "prompt_tokens": prompt, "samples": samples, "worst_case_cost_usd": usd}


ARMS = [arm("small:direct", 24), arm("small:cot", 384), arm("small:sc", 24, samples=8), arm("large:cot", 384)]
COST = {"small:direct": 24.0, "small:cot": 384.0, "small:sc": 192.0, "large:cot": 384.0}


def choose(p: dict[str, float], p_now: float = 0.2, **kw: Any) -> tuple[int | None, list[dict[str, Any]]]:
    kw.setdefault("exclude", {0})
    return policy.next_arm_by_value(ARMS, p_now, p, kw.pop("cost", COST), kw.pop("budget", NO_LIMITS),
                                    kw.pop("spent", Spend()), **kw)


# -- the choice -------------------------------------------------------------------------


def test_the_best_gain_per_token_wins_not_the_next_rung() -> None:
    # small:sc: +0.21 for 192 tokens (1.09 per 1k) beats small:cot +0.25 for 384 (0.65 per 1k)
    idx, ranking = choose({"small:cot": 0.45, "small:sc": 0.41, "large:cot": 0.40})
    assert ARMS[idx]["name"] == "small:sc"
    assert [r["arm"] for r in ranking] == ["small:sc", "small:cot", "large:cot"]
    top = ranking[0]
    assert top["gain"] == pytest.approx(0.21) and top["cost"] == 192 and top["value"] == pytest.approx(1.0938, abs=1e-3)
    assert top["skipped"] is None
    reason = policy.value_reason(idx, ranking, 0.2)
    assert reason == ("value: small:sc +0.21 P(correct) for 192 tokens (1.09 per 1k) "
                      "beats small:cot +0.25 for 384 tokens (0.65 per 1k)")


def test_a_much_larger_gain_pays_for_a_costlier_arm() -> None:
    idx, _ = choose({"small:cot": 0.95, "small:sc": 0.25})  # +0.75/384 beats +0.05/192
    assert ARMS[idx]["name"] == "small:cot"


def test_only_a_positive_gain_is_chosen_and_none_means_stop() -> None:
    idx, ranking = choose({"small:cot": 0.2, "small:sc": 0.1, "large:cot": 0.15}, p_now=0.2)
    assert idx is None
    assert all(r["skipped"].startswith("no gain") for r in ranking)
    assert policy.value_reason(idx, ranking, 0.2) == (
        "value: no untried arm is predicted to beat the answer in hand (P(correct) 0.20; best small:cot 0.20)")


def test_ties_go_to_the_cheaper_arm_then_to_the_ladder_order() -> None:
    # +0.1 per 192 tokens == +0.2 per 384 tokens: the cheaper sc arm wins the tie
    idx, _ = choose({"small:cot": 0.4, "small:sc": 0.3})
    assert ARMS[idx]["name"] == "small:sc"
    # same gain, same cost: the arm earlier in the list
    idx, _ = choose({"small:cot": 0.5, "large:cot": 0.5})
    assert ARMS[idx]["name"] == "small:cot"


def test_tried_arms_and_failed_tiers_are_never_chosen() -> None:
    p = {"small:cot": 0.9, "small:sc": 0.9, "large:cot": 0.6}
    idx, ranking = choose(p, exclude={0, 2}, down_tiers={"small"})
    assert ARMS[idx]["name"] == "large:cot"
    assert [r["arm"] for r in ranking] == ["large:cot", "small:cot"]  # tried arms are not listed
    assert ranking[1]["skipped"] == "tier 'small' failed earlier in this request"
    idx, _ = choose(p, exclude={0, 1, 2, 3})
    assert idx is None


def test_the_budget_is_respected() -> None:
    # 200 output tokens left: small:sc (192) fits, small:cot and large:cot (384) do not
    budget = BudgetConfig(max_output_tokens=210)
    idx, ranking = choose({"small:cot": 0.9, "small:sc": 0.3, "large:cot": 0.95}, budget=budget,
                          spent=Spend(output_tokens=10))
    assert ARMS[idx]["name"] == "small:sc"
    skipped = {r["arm"]: r["skipped"] for r in ranking}
    assert skipped["small:cot"].startswith("over budget (needs up to 384 output tokens, 200 left")
    # the thread's budget (an ``extra`` scope) binds too
    thread = (LimitConfig(max_output_tokens=100), Spend(), "thread")
    idx, ranking = choose({"small:cot": 0.9, "small:sc": 0.3}, extra=[thread])
    assert idx is None
    assert policy.value_reason(idx, ranking, 0.2).startswith(
        "budget exhausted: value: small:cot (+0.70 P(correct)) does not fit: needs up to 384 output tokens")


def test_an_arm_without_an_estimate_is_not_chosen() -> None:
    idx, ranking = choose({"large:cot": 0.3})
    assert ARMS[idx]["name"] == "large:cot"
    assert {r["arm"]: r["skipped"] for r in ranking}["small:cot"] == "no P(correct) estimate"


def test_a_gain_below_the_minimum_is_not_worth_a_call() -> None:
    idx, ranking = choose({"small:cot": 0.23, "small:sc": 0.21}, min_gain=0.05)
    assert idx is None
    assert {r["arm"]: r["skipped"] for r in ranking}["small:cot"] == "gain +0.030 below the 0.05 worth a call"
    assert policy.value_reason(idx, ranking, 0.2) == (
        "value: no arm gains enough over the answer in hand (P(correct) 0.20): best small:cot gain +0.030 "
        "below the 0.05 worth a call")
    idx, _ = choose({"small:cot": 0.23, "small:sc": 0.21}, min_gain=0.02)
    assert ARMS[idx]["name"] == "small:cot"  # small:sc's +0.01 is below 0.02, though more per token

    idx, ranking = choose({"small:cot": 0.5, "large:cot": 0.9}, cost={"small:cot": 0.0001, "large:cot": 0.001},
                          unit="usd")
    assert ARMS[idx]["name"] == "small:cot"  # 3000 per $ beats 700 per $
    assert ranking[0]["value"] == pytest.approx(3000)
    assert policy.value_reason(idx, ranking, 0.2, "usd") == (
        "value: small:cot +0.30 P(correct) for $0.000100 (3000 per $) beats large:cot +0.70 for $0.001000 (700 per $)")
    with pytest.raises(ValueError, match="unit must be one of tokens, usd"):
        choose({"small:cot": 0.5}, unit="seconds")


def test_the_answer_in_hand_is_the_one_the_request_would_return() -> None:
    attempts = [
        {"answer": "4", "confidence": 0.3},
        {"answer": "5", "confidence": 0.9, "truncated": True},  # cut at its cap: after complete replies
        {"answer": None, "error": "timeout", "confidence": None},
        {"answer": "6", "confidence": 0.1},
    ]
    assert policy.best_answer(attempts) == 0 and policy.answer_in_hand(attempts) == pytest.approx(0.3)
    assert policy.final_choice(attempts, 0.5)[0] == 0
    assert policy.best_answer(attempts[1:3]) == 0  # a cut reply is still an answer when it is the only one
    assert policy.answer_in_hand(attempts[1:3]) == pytest.approx(0.9)
    assert policy.best_answer([{"answer": None, "error": "down"}]) is None
    assert policy.answer_in_hand([{"answer": None, "error": "down"}]) == 0.0


# -- what the choice is fed ---------------------------------------------------------------


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path / "s.sqlite", ladder=("small:direct", "small:cot", "large:cot"),
                       escalation={"value_priors": {"large:cot": {"easy": 0.9, "medium": 0.8, "hard": 0.7,
                                                                  "output_tokens": 120}}})


def test_priors_come_from_the_config_then_the_measured_table_then_the_generic_one(cfg: Config) -> None:
    large = arm("large:cot", 256, model="large-model")
    assert policy.arm_prior(large, "hard", cfg) == (0.7, 120, "config")
    small = arm("small:cot", 256, model="small-model")
    assert policy.arm_prior(small, "easy", cfg) == (policy.GENERIC_PRIORS["cot"][0], None, "generic")
    assert policy.arm_prior(small, None, cfg)[0] == policy.GENERIC_PRIORS["cot"][1]  # unknown difficulty: medium
    measured = arm("small:cot", 256, model="SmolLM2-135M-Instruct")
    table = policy.BUILTIN_ARM_PRIORS["SmolLM2-135M-Instruct"]["cot"]
    assert policy.arm_prior(measured, "easy", cfg) == (table["easy"], table.get("output_tokens"), "builtin")


def test_an_sc_arm_without_a_prior_is_assumed_a_little_better_than_its_sample_prompt() -> None:
    data = default_config_data({})
    data["tiers"]["small"]["model"] = "some-other-model"
    c = config_from_data(data)
    p, tokens, source = policy.arm_prior(arm("small:sc", 24, samples=8, model="some-other-model"), "medium", c)
    assert source == "generic" and tokens is None
    assert p == pytest.approx(policy.GENERIC_PRIORS["direct"][1] + 0.05)


def test_arms_on_the_tier_of_the_answer_in_hand_are_scaled_by_its_confidence(cfg: Config) -> None:
    priors = {"small:direct": {"easy": 0.4, "medium": 0.3, "hard": 0.2},
              "small:cot": {"easy": 0.5, "medium": 0.4, "hard": 0.3}}
    c = cfg.model_copy(update={"escalation": cfg.escalation.model_copy(
        update={"value_priors": {**cfg.escalation.value_priors, **{
            k: ArmPrior.model_validate(v) for k, v in priors.items()}}})})
    arms = [arm("small:direct"), arm("small:cot", 256), arm("large:cot", 256)]
    hand = {"arm": "small:direct", "tier": "small", "answer": "4", "confidence": 0.1}
    est = policy.estimate_arms(arms, "easy", c)
    assert policy.same_tier_estimates(arms, est, hand, 0.1) == {"small:cot": pytest.approx(0.1 * 0.5 / 0.4)}
    # the router knows both small arms: its ratio, not the priors'
    est = policy.estimate_arms(arms, "easy", c, {"small:direct": 0.2, "small:cot": 0.6})
    assert policy.same_tier_estimates(arms, est, hand, 0.1) == {"small:cot": pytest.approx(0.3)}
    # the router knows only one of them: both from the priors
    est = policy.estimate_arms(arms, "easy", c, {"small:direct": 0.01})
    assert policy.same_tier_estimates(arms, est, hand, 0.1) == {"small:cot": pytest.approx(0.125)}

    choice = policy.value_escalation(arms, [hand], "easy", c, NO_LIMITS, Spend(), tried={0})
    assert [(r["arm"], r["p_correct"]) for r in choice.ranking] == [("large:cot", 0.9), ("small:cot", 0.125)]
    assert choice.ranking[1]["source"] == "config, scaled by the small:direct answer's confidence"
    assert choice.p_now == 0.1 and choice.unit == "usd"


def test_estimates_take_the_router_first_and_logged_tokens_over_the_worst_case(cfg: Config) -> None:
    arms = [arm("small:cot", 256, model="small-model"), arm("large:cot", 256, model="large-model")]
    est = policy.estimate_arms(arms, "easy", cfg, {"small:cot": 0.61})
    assert (est["small:cot"].p_correct, est["small:cot"].source) == (0.61, "router")
    assert est["small:cot"].output_tokens == 256  # no logged mean: the cap
    assert (est["large:cot"].p_correct, est["large:cot"].source, est["large:cot"].output_tokens) == (0.9, "config", 120)
    # dollars: 50 prompt tokens at 1.50 and 120 output tokens at 2.50 per 1M
    assert est["large:cot"].cost_usd == pytest.approx((50 * 1.5 + 120 * 2.5) / 1e6)
    assert policy.value_unit(est, ["small:cot", "large:cot"]) == "usd"


def test_a_free_arm_makes_tokens_the_unit(tmp_path: Path) -> None:
    c = make_config(tmp_path / "s.sqlite", small_tier={"price_input_per_1m": "0", "price_output_per_1m": "0"})
    est = policy.estimate_arms([arm("small:direct"), arm("large:cot", 256)], "easy", c)
    assert est["small:direct"].cost_usd == 0
    assert policy.value_unit(est, ["small:direct", "large:cot"]) == "tokens"
    assert policy.value_unit(est, ["large:cot"]) == "usd"


# -- configuration ----------------------------------------------------------------------


def _with_escalation(**escalation: Any) -> Config:
    data = default_config_data({})
    data["escalation"] = escalation
    return config_from_data(data, "test")


def test_the_default_is_the_ladder() -> None:
    c = _with_escalation()
    assert c.escalation.next == "ladder" and c.escalation.value_arms == [] and c.escalation.value_priors == {}


def test_value_arms_and_priors_are_validated_with_clear_errors() -> None:
    c = _with_escalation(next="value", value_arms=["small:sc"],
                         value_priors={"small:sc": {"easy": 0.4, "medium": 0.3, "hard": 0.2}})
    assert [a.name for a in c.escalation.value_arms] == ["small:sc"]
    with pytest.raises(ConfigError, match=r"escalation.value_arms\[1\]: unknown strategy 'sx' in 'small:sx' "
                                          r"\(known: bon, budget-cot, cod, "):
        _with_escalation(next="value", value_arms=["small:sc", "small:sx"])
    with pytest.raises(ConfigError, match=r"escalation.value_arms\[0\]: unknown tier 'medium' in 'medium:cot' "
                                          r"\(known: large, small\)"):
        _with_escalation(value_arms=["medium:cot"])
    with pytest.raises(ConfigError, match="arm 'smallsc' must look like 'tier:strategy'"):
        _with_escalation(value_arms=["smallsc"])
    with pytest.raises(ConfigError, match="escalation.value_priors: 'sc' is not an arm name"):
        _with_escalation(value_priors={"sc": {"easy": 0.4, "medium": 0.3, "hard": 0.2}})
    with pytest.raises(ConfigError, match="escalation.value_priors.'small:cod2': unknown strategy 'cod2'"):
        _with_escalation(value_priors={"small:cod2": {"easy": 0.4, "medium": 0.3, "hard": 0.2}})
    with pytest.raises(ConfigError, match="value_priors.small:sc.easy: Input should be less than or equal to 1"):
        _with_escalation(value_priors={"small:sc": {"easy": 1.4, "medium": 0.3, "hard": 0.2}})
    with pytest.raises(ConfigError, match="escalation.next: Input should be 'ladder' or 'value'"):
        _with_escalation(next="rung")


def planned(config: Config, environ: dict[str, str] = ENVIRON) -> list[str]:
    clients = {t: FakeTierClient(t, config, []) for t in ("small", "large")}
    return [a["name"] for a in ReasoningNodes(Services(config, environ=environ, clients=clients)).plan_arms(EASY)]


def test_value_arms_are_planned_after_the_ladder_only_in_value_mode(tmp_path: Path) -> None:
    def config(**escalation: Any) -> Config:
        return make_config(tmp_path / "s.sqlite", ladder=("small:direct", "large:cot"),
                           escalation={"value_arms": ["large:direct", "small:direct", "large:direct"], **escalation})

    assert planned(config()) == ["small:direct", "large:cot"]  # ladder mode: the ladder alone
    assert planned(config(next="value")) == ["small:direct", "large:cot", "large:direct"]
    assert planned(config(next="value"), environ={}) == ["small:direct"]  # the large tier has no key: disabled


# -- the graph ----------------------------------------------------------------------------

LADDER = ("small:direct", "small:cot", "large:cot")
PRIORS = {"small:direct": {"easy": 0.4, "medium": 0.3, "hard": 0.2},
          "small:cot": {"easy": 0.46, "medium": 0.4, "hard": 0.3},
          "large:cot": {"easy": 0.9, "medium": 0.8, "hard": 0.7}}


def escalate_updates(h: Any, question: str = EASY) -> list[dict[str, Any]]:
    return [u["escalate"] for u in h.graph.stream({"question": question}, stream_mode="updates") if "escalate" in u]


def test_the_ladder_climbs_one_rung_and_value_skips_to_the_arm_worth_it(make_graph: Any) -> None:
    ladder = make_graph(small=[small_reply("4", 0.2), small_reply("4", 0.3)], large=[large_reply("5", 0.95)],
                        ladder=LADDER, escalation={"value_priors": PRIORS})
    assert ladder.ask()["arms_tried"] == ["small:direct", "small:cot", "large:cot"]

    # small:cot is on the tier of the answer in hand: 0.2 (its confidence) x 0.46 / 0.4 = 0.23, +0.03
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)],
                   ladder=LADDER, escalation={"next": "value", "value_priors": PRIORS})
    (update,) = escalate_updates(h)
    assert update["decision"] == "solve" and update["rung"] == 2
    assert update["decision_reason"] == ("value: large:cot +0.70 P(correct) for $0.000843 (831 per $) "
                                         "beats small:cot +0.03 for $0.000065 (464 per $)")
    assert len(h.small.calls) == 1 and len(h.large.calls) == 1


def test_value_mode_answers_with_the_chosen_arm(make_graph: Any) -> None:
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.95)],
                   ladder=LADDER, escalation={"next": "value", "value_priors": PRIORS})
    r = h.ask()
    assert r["arms_tried"] == ["small:direct", "large:cot"]
    assert r["status"] == "answered" and r["answer"] == "5"


def test_value_mode_uses_an_arm_that_is_not_on_the_ladder(make_graph: Any) -> None:
    priors = {**PRIORS, "large:direct": {"easy": 0.85, "medium": 0.7, "hard": 0.5}}
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.9)], ladder=LADDER,
                   escalation={"next": "value", "value_arms": ["large:direct"], "value_priors": priors})
    r = h.ask()
    assert r["arms_tried"] == ["small:direct", "large:direct"]  # +0.65 at 24 tokens beats +0.70 at 256
    assert h.large.settings[0]["max_tokens"] == 24


def test_no_arm_worth_trying_stops_with_the_answer_in_hand(make_graph: Any) -> None:
    priors = {"small:cot": {"easy": 0.1, "medium": 0.1, "hard": 0.1},
              "large:cot": {"easy": 0.25, "medium": 0.2, "hard": 0.1}}
    h = make_graph(small=[small_reply("4", 0.3)], large=[large_reply("5", 0.99)], ladder=LADDER,
                   escalation={"next": "value", "value_priors": priors})
    r = h.ask()
    assert r["arms_tried"] == ["small:direct"]
    assert r["status"] == "low_confidence" and r["answer"] == "4"
    assert r["reason"] == ("value: no untried arm is predicted to beat the answer in hand "
                           "(P(correct) 0.30; best large:cot 0.25)")
    assert h.large.calls == []


def test_value_mode_respects_the_budget(make_graph: Any) -> None:
    # $0.0003 left after the small attempt: large:cot's worst case ($0.000715) does not fit, small:cot does
    h = make_graph(small=[small_reply("4", 0.2), small_reply("4", 0.6)], large=[], ladder=LADDER,
                   budget={"max_cost_usd": "0.0003"}, escalation={"next": "value", "value_priors": PRIORS})
    r = h.ask()
    assert r["arms_tried"] == ["small:direct", "small:cot"]
    assert any(s.startswith("large:cot: over budget (may cost $") for s in r["skipped"])

    only_large = {"small:cot": {"easy": 0.1, "medium": 0.1, "hard": 0.1}, "large:cot": PRIORS["large:cot"]}
    h = make_graph(small=[small_reply("4", 0.2)], large=[], ladder=LADDER,
                   budget={"max_cost_usd": "0.0003"}, escalation={"next": "value", "value_priors": only_large})
    r = h.ask()
    assert r["arms_tried"] == ["small:direct"]
    assert r["status"] == "budget_exhausted" and r["budget_scope"] == "request"
    assert r["reason"].startswith("budget exhausted: value: large:cot (+0.70 P(correct)) does not fit: may cost $")


def test_a_failed_tier_is_left_for_any_arm_that_may_answer(make_graph: Any) -> None:
    h = make_graph(small=[unreachable()], large=[large_reply("5", 0.9)], ladder=LADDER,
                   escalation={"next": "value", "value_priors": PRIORS})
    r = h.ask()
    assert r["arms_tried"] == ["small:direct", "large:cot"]
    assert r["status"] == "answered"
    assert any(s.startswith("small:cot: tier 'small' failed earlier") for s in r["skipped"])


def test_the_routers_predictions_win_over_the_priors(make_graph: Any, tmp_path: Path) -> None:
    from router_training.models import fit_router
    from router_training.table import OutcomeTable

    prompts = [f"What is {i} + {i + 3}?" for i in range(60)] + [f"What is {i} times {i + 2}?" for i in range(60)]
    correct = np.array([[0.0, 1.0]] * len(prompts))  # small:direct never right, large:cot always
    table = OutcomeTable(prompts, ["small:direct", "large:cot"], correct,
                         cost=np.tile([0.00001, 0.001], (len(prompts), 1)), source="test")
    router = fit_router(table, "logistic", seed=0).save(
        tmp_path / "router", {"policy": {"kind": "threshold", "tau": 0.0,
                                         "costs": {"small:direct": 0.00001, "large:cot": 0.001}}})
    low = {"small:cot": {"easy": 0.1, "medium": 0.1, "hard": 0.1}, "large:cot": {"easy": 0.1, "medium": 0.1, "hard": 0.1}}
    h = make_graph(small=[small_reply("4", 0.2)], large=[large_reply("5", 0.9)], ladder=LADDER,
                   router={"artifact": str(router)}, escalation={"next": "value", "value_priors": low})
    (update,) = escalate_updates(h)  # the priors alone would stop: large:cot 0.10 < 0.20 in hand
    assert update["rung"] == 2 and update["decision_reason"].startswith("value: large:cot +0.")
