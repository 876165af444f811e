"""Best-of-N with early rejection (the ``bon`` strategy): pruning order on scripted tiers, the
ledger's hold and settlement, the reward hooks and the configuration's checks."""

from __future__ import annotations

import json
import sys
import threading
import types
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from effreason_agents.adapters.reward import endpoint_reward, import_reward, load_reward
from effreason_agents.adapters.tiers import TierClient, cost_usd, message_text
from effreason_agents.config import Config, config_from_data, default_config_data
from effreason_agents.core.records import Completion, TokenLogprob
from effreason_agents.engine import policy
from effreason_agents.engine.runner import AttemptRunner
from effreason_agents.engine.sampling import (
    CONTINUATION_OVERHEAD_TOKENS,
    best_of_n,
    bon_candidate_input_bound,
    bon_input_bound,
    bon_rounds,
    mean_logprob,
    reject_count,
)
from effreason_agents.errors import ConfigError, TierError
from effreason_agents.graph.nodes import ReasoningNodes, Services

ENVIRON: dict[str, str] = {}
QUESTION = "What is 2 + 3?"


# -- a scripted tier ------------------------------------------------------------------------
# Each candidate is one script: a list of rounds (words, logprob per token, finish reason).
# A first-round request takes the next unused script; a continuation is recognised by its
# prefilled text, which starts with the script's tag. One word is one token.


def round_(words: str, lp: float, finish: str = "length") -> tuple[str, float, str]:
    return (words, lp, finish)


class ScriptedBonTier(TierClient):
    def __init__(self, config: Config, scripts: dict[str, list[tuple[str, float, str]]],
                 fail: Sequence[str] = ()) -> None:
        super().__init__("small", config.tiers["small"], config, ENVIRON)
        self.scripts = scripts
        self.unused = list(scripts)
        self.progress = {tag: 0 for tag in scripts}
        self.fail = set(fail)
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []  # one entry per request: tag, input, output, max_tokens

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def text_bound(self, text: str) -> int:
        return len(text.split())

    def complete(self, messages: Sequence[BaseMessage], *, max_tokens: int, temperature: float = 0.0,
                 stop: Sequence[str] | None = None, **_: Any) -> Completion:
        msgs = list(messages)
        prefill = str(msgs[-1].content) if msgs and isinstance(msgs[-1], AIMessage) else ""
        with self.lock:
            if prefill:
                tag = prefill.split()[0]
            else:
                tag = self.unused.pop(0)
            if tag in self.fail:
                raise TierError("small", f"scripted failure of {tag}")
            words, lp, finish = self.scripts[tag][self.progress[tag]]
            self.progress[tag] += 1
            if not prefill:
                words = f"{tag} {words}"
            n = len(words.split())
            assert n <= max_tokens, f"{tag}: scripted {n} tokens but max_tokens={max_tokens}"
            # billed input: every message's words plus two template tokens per message
            billed = sum(len(message_text(m).split()) + 2 for m in msgs)
            self.log.append({"tag": tag, "input": billed, "output": n, "max_tokens": max_tokens})
        gen = ("" if not prefill else " ") + words
        return Completion(
            text=prefill + gen, input_tokens=billed, output_tokens=n, finish_reason=finish, latency_s=0.0,
            model="small-model", cost_usd=cost_usd(self.tier, billed, n),
            logprobs=[TokenLogprob((" " if i or prefill else "") + w, lp) for i, w in enumerate(words.split())],
            prefill=prefill,
        )


def make_config(tmp_path: Path, **bon: Any) -> Config:
    strategy = {"kind": "bon", "max_tokens": 6, "samples": 4, "sample_prompt": "cot", "temperature": 0.7,
                "round_tokens": 2, "reject_fraction": 0.5, **bon}
    return config_from_data({
        "tiers": {
            "small": {"engine": "openai-compatible", "base_url": "http://127.0.0.1:9/v1", "model": "small-model",
                      "max_retries": 0, "price_input_per_1m": "0.10", "price_output_per_1m": "0.20",
                      "capabilities": {"logprobs": True, "top_logprobs": 2, "assistant_prefill": True}},
        },
        "strategies": {"bon": strategy, "direct": {"kind": "direct", "max_tokens": 8}},
        "ladder": ["small:bon"],
        "store": {"path": str(tmp_path / "outcomes.sqlite")},
    }, source="test")


# Four candidates over three rounds of two tokens (max_tokens 6). After round 1, B and D (the
# two lowest of four) go; after round 2, C (the lower of the two left); A finishes.
FOUR = {
    "A": [round_("x", -0.2), round_("y y", -0.2), round_("so 5", -0.2, "stop")],
    "B": [round_("x", -3.0), round_("y y", -0.1), round_("so 5", -0.1, "stop")],
    "C": [round_("x", -0.5), round_("y y", -0.9), round_("so 6", -0.1, "stop")],
    "D": [round_("x", -4.0), round_("y y", -0.1), round_("so 7", -0.1, "stop")],
}


def tag_of(r: Any, i: int) -> str:
    return r.candidates[i].text.split()[0]


def run(client: ScriptedBonTier, **kw: Any) -> Any:
    args = dict(question=QUESTION, max_tokens=6, samples=len(client.scripts), round_tokens=2, reject_fraction=0.5,
                temperature=0.7)
    args.update(kw)
    return best_of_n(client, [SystemMessage("Think step by step."), HumanMessage(QUESTION)], **args)


# -- pruning order --------------------------------------------------------------------------


def test_lowest_partials_are_dropped_each_round_and_the_best_complete_one_wins(tmp_path: Path) -> None:
    client = ScriptedBonTier(make_config(tmp_path), FOUR)
    r = run(client)
    dropped = [sorted(tag_of(r, i) for i in idx) for idx in r.rejected_per_round]
    assert dropped == [["B", "D"], ["C"]]
    assert tag_of(r, r.winner) == "A"
    assert r.winner_text.endswith("so 5")
    assert r.winner_score == pytest.approx(-0.2)
    assert r.rounds == 3 and r.requests == 4 + 2 + 1
    by_tag = {tag_of(r, i): c for i, c in enumerate(r.candidates)}
    assert by_tag["B"].rejected_round == 1 and by_tag["C"].rejected_round == 2
    assert {t: c.output_tokens for t, c in by_tag.items()} == {"A": 6, "B": 2, "C": 4, "D": 2}
    # the answer read from each candidate: only A's text is complete
    assert by_tag["A"].answer is not None
    # every request asked for at most one round of tokens
    assert all(e["max_tokens"] <= 2 for e in client.log)
    record = r.record()
    assert record["bon_candidates"] == 4 and record["bon_rejected_r1"] == 2 and record["bon_rejected_r2"] == 1
    assert record["bon_score"] == pytest.approx(-0.2)
    assert sorted(v for k, v in record.items() if k.startswith("bon_tokens_c")) == [2, 2, 4, 6]


def test_a_complete_candidate_beats_a_better_scored_one_cut_by_max_tokens(tmp_path: Path) -> None:
    scripts = {
        "A": [round_("x", -0.1), round_("y y", -0.1), round_("z z", -0.1)],  # never stops: cut at 6 tokens
        "B": [round_("x", -0.3), round_("so 4", -0.3, "stop")],
    }
    r = run(ScriptedBonTier(make_config(tmp_path), scripts), reject_fraction=0.4)
    assert r.rejected_per_round == [[], []]  # floor(0.4 * 2) = 0; then one runner: none dropped
    assert tag_of(r, r.winner) == "B"
    assert r.candidates[r.winner].complete
    assert [c.state for c in r.candidates] == ["done", "done"]


def test_plain_best_of_n_is_one_round_without_rejection(tmp_path: Path) -> None:
    scripts = {t: [round_("a b c d so 5", lp, "stop")] for t, lp in (("A", -0.9), ("B", -0.2), ("C", -0.5))}
    r = run(ScriptedBonTier(make_config(tmp_path), scripts), max_tokens=8, round_tokens=8, reject_fraction=0.0)
    assert r.rounds == 1 and r.rejected_per_round == [] and tag_of(r, r.winner) == "B"


def test_a_reward_callable_ranks_instead_of_the_logprobs(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def reward(question: str, text: str) -> float:
        seen.append((question, text))
        return 10.0 if text.startswith("D") else -float(len(text))

    r = run(ScriptedBonTier(make_config(tmp_path), FOUR), reward=reward)
    assert tag_of(r, r.winner) == "D"  # the logprobs would have dropped D first
    assert r.scored_by == "reward" and r.winner_score == 10.0
    assert all(q == QUESTION for q, _ in seen)


def test_a_failing_reward_ranks_that_candidate_last(tmp_path: Path) -> None:
    def reward(question: str, text: str) -> float:
        if text.startswith("A"):
            raise RuntimeError("reward model down")
        return -1.0

    r = run(ScriptedBonTier(make_config(tmp_path), FOUR), reward=reward)
    assert "A" in [tag_of(r, i) for i in r.rejected_per_round[0]]


def test_a_failed_candidate_is_dropped_and_the_others_go_on(tmp_path: Path) -> None:
    client = ScriptedBonTier(make_config(tmp_path), FOUR, fail=["A"])
    r = run(client)
    failed = [c for c in r.candidates if c.state == "failed"]
    assert len(failed) == 1 and "scripted failure" in (failed[0].error or "")
    assert r.winner is not None and r.output_tokens == sum(e["output"] for e in client.log)


def test_every_first_request_failing_raises_the_tier_error(tmp_path: Path) -> None:
    with pytest.raises(TierError, match="scripted failure"):
        run(ScriptedBonTier(make_config(tmp_path), {"A": FOUR["A"], "B": FOUR["B"]}, fail=["A", "B"]))


def test_a_tier_without_logprobs_needs_a_reward(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    client = ScriptedBonTier(cfg, FOUR)
    client.tier = cfg.tiers["small"].model_copy(update={"capabilities": cfg.tiers["small"].capabilities.model_copy(
        update={"logprobs": False})})
    with pytest.raises(ConfigError, match="reward"):
        run(client)
    assert client.log == []


def test_without_prefill_the_candidates_run_in_one_round(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    scripts = {t: [round_("a b c so 5", lp, "stop")] for t, lp in (("A", -0.9), ("B", -0.2))}
    client = ScriptedBonTier(cfg, scripts)
    client.tier = cfg.tiers["small"].model_copy(update={"capabilities": cfg.tiers["small"].capabilities.model_copy(
        update={"assistant_prefill": False})})
    r = run(client)
    assert r.rounds == 1 and [e["max_tokens"] for e in client.log] == [6, 6]
    assert tag_of(r, r.winner) == "B"


# -- pure helpers ---------------------------------------------------------------------------


def test_reject_count_drops_a_fraction_but_never_every_runner() -> None:
    assert [reject_count(n, 0.5) for n in range(0, 6)] == [0, 0, 1, 1, 2, 2]
    assert reject_count(4, 0.99) == 3 and reject_count(3, 0.3) == 0 and reject_count(10, 0.3) == 3
    assert reject_count(5, 0.0) == 0


def test_mean_logprob() -> None:
    assert mean_logprob(None) is None and mean_logprob([]) is None
    assert mean_logprob([TokenLogprob("a", -1.0), TokenLogprob("b", -0.5)]) == pytest.approx(-0.75)


def test_input_bound_covers_every_round_resending_prompt_and_partial() -> None:
    assert bon_rounds(6, 2) == 3 and bon_rounds(7, 2) == 4 and bon_rounds(5, 8) == 1
    # rounds: 100; 100 + ceil(2 * 1.1) + overhead; 100 + ceil(4 * 1.1) + overhead
    assert bon_candidate_input_bound(100, 6, 2) == 300 + 3 + 5 + 2 * CONTINUATION_OVERHEAD_TOKENS
    assert bon_input_bound(100, 6, 2, 4) == 4 * bon_candidate_input_bound(100, 6, 2)
    assert bon_input_bound(100, 6, 6, 4) == 400  # one round: the plain N × prompt


# -- the ledger: hold and settlement -------------------------------------------------------


def test_run_arm_holds_the_worst_case_and_settles_every_token(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    client = ScriptedBonTier(cfg, FOUR)
    services = Services(cfg, environ=ENVIRON, clients={"small": client})
    try:
        arm = ReasoningNodes(services).plan_arms(QUESTION)[0]
        assert arm["samples"] == 4
        assert arm["input_tokens_bound"] == bon_input_bound(arm["prompt_tokens"], 6, 2, 4)
        assert Decimal(arm["worst_case_cost_usd"]) == cost_usd(cfg.tiers["small"], arm["input_tokens_bound"], 24)
        held: list[Any] = []
        reserve = services.ledger.reserve

        def spy(key: str, scopes: Any, worst: Any, **kw: Any) -> Any:
            held.append(worst)
            return reserve(key, scopes, worst, **kw)

        services.ledger.reserve = spy  # type: ignore[method-assign]
        runner = AttemptRunner(services)
        from effreason_agents.core.records import Scope

        scopes = [Scope("request", "r1")]
        attempt = runner.run_arm(request_id="r1", index=0, scopes=scopes, arm=arm, question=QUESTION, features={})
        billed_in = sum(e["input"] for e in client.log)
        billed_out = sum(e["output"] for e in client.log)
        assert billed_out == 6 + 2 + 4 + 2  # rejected partials included
        usage, _ = services.ledger.settled("r1:0")
        assert usage.output_tokens == billed_out
        assert usage.total_tokens == billed_in + billed_out  # continuations re-send the prompt and partial
        assert attempt["input_tokens"] == billed_in and attempt["output_tokens"] == billed_out
        assert Decimal(attempt["cost_usd"]) == cost_usd(cfg.tiers["small"], billed_in, billed_out)
        worst = held[0]
        assert worst.output_tokens == 24 and worst.total_tokens == arm["input_tokens_bound"] + 24
        assert worst.total_tokens >= usage.total_tokens and worst.cost_usd >= usage.cost_usd
        # the attempt records the run
        assert attempt["samples_cap"] == 4 and len(attempt["samples"]) == 4
        s = attempt["signals"]
        assert s["bon_candidates"] == 4 and s["bon_rejected_r1"] == 2 and s["bon_rejected_r2"] == 1
        assert s["bon_score"] == pytest.approx(-0.2)
        assert attempt["raw_text"].startswith("A") and attempt["answer"] == "5"
        # the winner's logprobs judge it: rejected partials are not votes
        assert s["agreement_share"] is None and s["answer_min_logprob"] == pytest.approx(-0.2)
        assert "majority share" not in (attempt["confidence_method"] or "")
    finally:
        services.close()


def test_policy_fits_with_the_bon_input_bound(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    strategy = cfg.strategies["bon"]
    n, tin, tout = policy.arm_token_bounds(strategy, 50, 6)
    assert (n, tin, tout) == (4, bon_input_bound(50, 6, 2, 4), 24)
    assert policy.arm_token_bounds(cfg.strategies["direct"], 50, 8) == (1, 50, 8)
    arm = {"prompt_tokens": 50, "samples": 4, "input_tokens_bound": tin}
    assert policy.arm_input_bound(arm) == tin > 200
    assert policy.arm_input_bound({"prompt_tokens": 50, "samples": 4}) == 200


# -- rewards --------------------------------------------------------------------------------


def test_import_reward_resolves_and_explains_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("bon_test_rewards")
    mod.score = lambda q, t: float(len(t))  # type: ignore[attr-defined]
    mod.not_callable = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bon_test_rewards", mod)
    assert import_reward("bon_test_rewards:score")("q", "abc") == 3.0
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        import_reward("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        import_reward("bon_test_rewards:missing")
    with pytest.raises(ConfigError, match="not callable"):
        import_reward("bon_test_rewards:not_callable")
    cfg = config_from_data(_with_bon(reward="bon_test_rewards:score"))
    fn = load_reward(cfg.strategies["bon"])
    assert fn is not None and fn("q", "ab") == 2.0
    assert load_reward(config_from_data(_with_bon()).strategies["bon"]) is None


def test_endpoint_reward_posts_question_and_text(serve_app: Any) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def score(request: Request) -> JSONResponse:
        body = await request.json()
        if body["text"] == "broken":
            return JSONResponse({"nope": 1})
        return JSONResponse({"score": len(body["question"]) + len(body["text"])})

    base = serve_app(Starlette(routes=[Route("/score", score, methods=["POST"])]))
    fn = endpoint_reward(base + "/score")
    assert fn("ab", "cde") == 5.0
    with pytest.raises(ValueError, match="reward endpoint"):
        fn("q", "broken")


# -- configuration ---------------------------------------------------------------------------


BON = {"kind": "bon", "max_tokens": 160, "samples": 4, "sample_prompt": "cod", "temperature": 0.7}


def _with_bon(**fields: Any) -> dict[str, Any]:
    data = default_config_data()
    data["strategies"]["bon"] = {**BON, **fields}
    return data


def test_a_bon_strategy_loads_with_its_defaults() -> None:
    s = config_from_data(_with_bon()).strategies["bon"]
    assert s.kind == "bon" and s.samples == 4 and s.reject_fraction == 0.5 and s.round_tokens == 32
    assert s.reward is None and s.reward_url is None


@pytest.mark.parametrize("fields,needle", [
    ({"samples": 1}, "samples = 1"),
    ({"reject_fraction": 0.0}, "reject_fraction = 0.0"),
    ({"reject_fraction": 1.0}, "reject_fraction = 1.0"),
    ({"reject_fraction": -0.2}, "reject_fraction = -0.2"),
    ({"round_tokens": 0}, "round_tokens = 0"),
    ({"temperature": 0.0}, "temperature"),
    ({"reward": "not a callable"}, "reward = 'not a callable'"),
    ({"reward": "m:f", "reward_url": "http://x/score"}, "reward and reward_url"),
    ({"reward_url": "ftp://x"}, "reward_url = 'ftp://x'"),
])
def test_bad_bon_fields_fail_at_load_naming_the_field(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_data(_with_bon(**fields))
    assert "strategies.bon" in str(err.value) and needle in str(err.value)


def test_bon_fields_do_not_constrain_other_kinds() -> None:
    data = default_config_data()
    data["strategies"]["sc"] = {**data["strategies"]["sc"], "samples": 1, "reject_fraction": 0.0}
    assert config_from_data(data).strategies["sc"].samples == 1


def test_env_override_reaches_the_bon_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from effreason_agents.config import load_config

    monkeypatch.chdir(tmp_path)  # no effreason.toml here
    base = {f"EFFREASON__strategies__bon__{k}": json.dumps(v) for k, v in BON.items()}
    env = {**base, "EFFREASON__strategies__bon__samples": "6", "EFFREASON__strategies__bon__reject_fraction": "0.25"}
    cfg = load_config(environ=env)
    assert cfg.strategies["bon"].samples == 6 and cfg.strategies["bon"].reject_fraction == 0.25
    with pytest.raises(ConfigError, match="strategies.bon: samples = 1"):
        load_config(environ={**base, "EFFREASON__strategies__bon__samples": "1"})
