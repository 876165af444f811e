"""Uncertainty: answer tokens located from character spans, signals, heuristic confidence."""

from __future__ import annotations

import math

import pytest

from effreason_agents.core.prompts import parse_answer
from effreason_agents.core.records import TokenLogprob
from effreason_agents.core.confidence import (
    HEURISTIC_METHOD,
    SIGNAL_NAMES,
    answer_tokens,
    compute_signals,
    heuristic_confidence,
)

ln = math.log


def tok(token: str, p: float, *alts: tuple[str, float]) -> TokenLogprob:
    """A token with probability ``p`` and alternatives given as probabilities."""
    return TokenLogprob(token, ln(p), [(t, ln(q)) for t, q in alts])


# "#### 42": the answer "42" is spelled by the last two tokens.
SEPARATED = [
    tok("####", 0.95, ("####", 0.95)),
    tok(" ", 0.9),
    tok("4", 0.6, ("4", 0.6), ("5", 0.3), ("6", 0.1)),
    tok("2", 0.9, ("2", 0.9), ("3", 0.1)),
]
SEPARATED_TEXT = "".join(t.token for t in SEPARATED)


def test_hand_made_reply_is_consistent() -> None:
    assert SEPARATED_TEXT == "#### 42"
    assert parse_answer(SEPARATED_TEXT).span == (5, 7)


# -- answer_tokens ----------------------------------------------------------------------


def test_answer_tokens_from_span() -> None:
    assert [t.token for t in answer_tokens(SEPARATED, 0, (5, 7))] == ["4", "2"]
    assert [t.token for t in answer_tokens(SEPARATED, 0, (0, 4))] == ["####"]


def test_partially_overlapping_token_counts() -> None:
    toks = [TokenLogprob("ab", -1.0), TokenLogprob("cd", -2.0), TokenLogprob("ef", -3.0)]
    assert [t.token for t in answer_tokens(toks, 0, (1, 3))] == ["ab", "cd"]


def test_whitespace_tokens_are_skipped() -> None:
    assert [t.token for t in answer_tokens(SEPARATED, 0, (4, 7))] == ["4", "2"]


def test_prefill_offset() -> None:
    prefill = "The answer is"
    generated = [tok(" 4", 0.5), tok("2", 0.8), tok(".", 0.99)]
    text = prefill + "".join(t.token for t in generated)
    span = parse_answer(text).span
    assert span is not None and text[span[0] : span[1]] == "42"
    assert [t.token for t in answer_tokens(generated, len(prefill), span)] == [" 4", "2"]
    # without the offset the span points past the generated tokens' positions
    assert [t.token for t in answer_tokens(generated, 0, span)] != [" 4", "2"]


def test_span_outside_the_tokens() -> None:
    assert answer_tokens(SEPARATED, 0, (100, 105)) == []


# -- compute_signals --------------------------------------------------------------------


def test_signals_on_hand_made_tokens() -> None:
    sig = compute_signals(SEPARATED, 0, (5, 7), "stop")
    assert set(sig) == set(SIGNAL_NAMES)
    assert sig["answer_mean_logprob"] == pytest.approx((ln(0.6) + ln(0.9)) / 2)
    assert sig["answer_min_logprob"] == pytest.approx(ln(0.6))
    entropy_4 = -(0.6 * ln(0.6) + 0.3 * ln(0.3) + 0.1 * ln(0.1))
    assert sig["answer_max_entropy"] == pytest.approx(entropy_4)
    assert sig["answer_min_margin"] == pytest.approx(ln(0.6) - ln(0.3))  # ln 2, at "4"
    assert sig["output_mean_logprob"] == pytest.approx((ln(0.95) + ln(0.9) + ln(0.6) + ln(0.9)) / 4)
    assert sig["truncated"] == 0.0


def test_entropy_is_renormalized_over_returned_alternatives() -> None:
    toks = [tok("a", 0.4, ("a", 0.4), ("b", 0.4))]
    sig = compute_signals(toks, 0, (0, 1), "stop")
    assert sig["answer_max_entropy"] == pytest.approx(ln(2))
    assert sig["answer_min_margin"] == pytest.approx(0.0)


def test_no_alternatives_gives_no_entropy_or_margin() -> None:
    sig = compute_signals([tok("7", 0.5)], 0, (0, 1), "stop")
    assert sig["answer_min_logprob"] == pytest.approx(ln(0.5))
    assert sig["answer_max_entropy"] is None and sig["answer_min_margin"] is None


@pytest.mark.parametrize(("finish", "truncated"), [("length", 1.0), ("stop", 0.0), (None, 0.0)])
def test_no_logprobs(finish: str | None, truncated: float) -> None:
    for logprobs in (None, []):
        sig = compute_signals(logprobs, 0, (0, 1), finish)
        assert sig.pop("truncated") == truncated
        assert all(v is None for v in sig.values())


def test_no_span_keeps_only_output_signals() -> None:
    sig = compute_signals(SEPARATED, 0, None, "length")
    assert sig["truncated"] == 1.0
    assert sig["output_mean_logprob"] is not None
    assert sig["answer_min_logprob"] is None and sig["answer_mean_logprob"] is None


# -- heuristic_confidence ---------------------------------------------------------------


def test_confidence_is_exp_of_min_answer_logprob() -> None:
    sig = compute_signals(SEPARATED, 0, (5, 7), "stop")
    conf, method = heuristic_confidence(sig, has_answer=True, answer_method="separator")
    assert conf == pytest.approx(0.6)
    assert method == HEURISTIC_METHOD


def test_no_answer_means_zero_confidence() -> None:
    sig = compute_signals(SEPARATED, 0, (5, 7), "stop")
    assert heuristic_confidence(sig, has_answer=False, answer_method="none")[0] == 0.0


@pytest.mark.parametrize("method", ["last-number", "text"])
def test_truncated_before_separator_means_zero(method: str) -> None:
    sig = compute_signals(SEPARATED, 0, (5, 7), "length")
    conf, why = heuristic_confidence(sig, has_answer=True, answer_method=method)
    assert conf == 0.0 and "truncated" in why


def test_truncated_after_separator_keeps_confidence() -> None:
    sig = compute_signals(SEPARATED, 0, (5, 7), "length")
    assert heuristic_confidence(sig, has_answer=True, answer_method="separator")[0] == pytest.approx(0.6)


def test_no_logprobs_means_no_confidence() -> None:
    sig = compute_signals(None, 0, (5, 7), "stop")
    conf, why = heuristic_confidence(sig, has_answer=True, answer_method="separator")
    assert conf is None and "no logprobs" in why


def test_confidence_is_clamped() -> None:
    sig = {name: None for name in SIGNAL_NAMES} | {"answer_min_logprob": 1e-6, "truncated": 0.0}
    assert heuristic_confidence(sig, has_answer=True, answer_method="separator")[0] == 1.0


# -- recorded payloads: OpenAI's and llama.cpp's logprob shapes ------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from effreason_agents.adapters.tiers import parse_logprobs  # noqa: E402
from effreason_agents.core.confidence import (  # noqa: E402
    QUESTION_SIGNALS,
    available_signals,
    question_signals,
)

DATA = Path(__file__).parent / "data"


def _entropy_of(top: list[dict]) -> float:
    ps = [math.exp(t["logprob"]) for t in top]
    z = sum(ps)
    return -sum(p / z * math.log(p / z) for p in ps)


@pytest.mark.parametrize(
    ("fixture", "answer", "method"),
    [("openai_chat_logprobs.json", "8", "separator"), ("llamacpp_chat_logprobs.json", "5", "last-number")],
)
def test_signals_from_recorded_payloads(fixture: str, answer: str, method: str) -> None:
    raw = json.loads((DATA / fixture).read_text())
    choice = raw["choices"][0]
    content = choice["logprobs"]["content"]
    toks = parse_logprobs(choice["logprobs"])
    assert toks is not None and len(toks) == len(content)
    text = "".join(t.token for t in toks)
    parsed = parse_answer(text)
    assert parsed.answer == answer and parsed.method == method
    sig = compute_signals(toks, 0, parsed.span, choice["finish_reason"], output_tokens=raw["usage"]["completion_tokens"],
                          max_tokens=32, answer_method=parsed.method)
    # the answer is one token in both replies (llama.cpp ends with an empty end-of-turn token)
    last = next(c for c in reversed(content) if c["token"].strip() == answer)
    assert sig["answer_min_logprob"] == pytest.approx(last["logprob"])
    assert sig["answer_mean_logprob"] == pytest.approx(last["logprob"])
    assert sig["answer_max_entropy"] == pytest.approx(_entropy_of(last["top_logprobs"]))
    top = sorted((t["logprob"] for t in last["top_logprobs"]), reverse=True)
    assert sig["answer_min_margin"] == pytest.approx(top[0] - top[1])
    lps = [c["logprob"] for c in content]
    assert sig["output_mean_logprob"] == pytest.approx(sum(lps) / len(lps))
    assert sig["output_min_logprob"] == pytest.approx(min(lps))
    assert sig["output_mean_entropy"] == pytest.approx(sum(_entropy_of(c["top_logprobs"]) for c in content) / len(content))
    assert sig["length_ratio"] == pytest.approx(len(content) / 32)
    assert sig["truncated"] == 0.0
    assert sig["separator_found"] == (1.0 if method == "separator" else 0.0)
    assert sig["agreement_share"] is None and sig["distinct_answers"] is None


def test_agreement_signals() -> None:
    sig = compute_signals(None, 0, None, "stop", samples=["5", "5", "6", None])
    assert sig["agreement_share"] == 0.5 and sig["distinct_answers"] == 2.0
    assert compute_signals(None, 0, None, "stop", samples=[None, None])["agreement_share"] == 0.0


def test_sc_heuristic_is_the_majority_share() -> None:
    sig = compute_signals(None, 0, None, "stop", samples=["5", "5", "5", "6"])
    conf, method = heuristic_confidence(sig, has_answer=True, answer_method="separator")
    assert conf == 0.75 and "majority share" in method


def test_question_signals() -> None:
    from effreason_agents.core.features import classify_difficulty

    feats = classify_difficulty("What is 12 + 305?")[1]
    q = question_signals(feats, "317")
    assert set(q) == set(QUESTION_SIGNALS)
    assert q["qtype_arithmetic"] == 1.0 and q["qtype_yes_no"] == 0.0
    assert q["question_numbers"] == 2.0 and q["question_max_digits"] == 3.0
    assert q["answer_numeric"] == 1.0 and q["answer_chars"] == 3.0
    assert question_signals(feats, "yes")["answer_numeric"] == 0.0
    none = question_signals(None, None)
    assert all(v is None for v in none.values())


def test_available_signals_follow_the_tier() -> None:
    bare = available_signals(logprobs=False, top_logprobs=0, sc=False)
    assert "answer_min_logprob" not in bare and "question_score" in bare and "truncated" in bare
    assert "answer_min_logprob" in available_signals(True, 0, False)
    assert "answer_max_entropy" not in available_signals(True, 1, False)
    assert "answer_max_entropy" in available_signals(True, 5, False)
    assert "agreement_share" in available_signals(False, 0, True)
