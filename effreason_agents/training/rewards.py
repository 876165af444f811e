"""Rewards for RL fine-tuning toward short correct reasoning, as TRL ``reward_funcs``.

Each factory returns a callable with the signature TRL's ``GRPOTrainer`` calls::

    reward(completions, **kwargs) -> list[float]

``completions`` is a list of strings (standard datasets) or of message lists
(conversational datasets: the last assistant message's content is read). The dataset's
other columns arrive as keyword lists aligned with ``completions`` (``answer=[...]``,
``answer_type=[...]``), together with TRL's own keywords (``prompts``, ``completion_ids``,
``trainer_state`` …); keywords a reward does not use are ignored.

* :func:`correctness_reward` — 1.0 when the answer read from the completion
  (:func:`~effreason_agents.core.prompts.parse_answer`) is the gold answer by the
  benchmark's grader for its answer type (``number``, ``choice``, ``yesno``, ``date``,
  ``text``; :func:`~effreason_agents.evaluation.tasks.check_answer`), else 0.0.
* :func:`kimi_length_reward` — Kimi 1.5's length reward over the group of completions of
  one prompt: ``λ = 0.5 − (len − min_len)/(max_len − min_len)`` (``λ = 0`` when every
  completion of the group is equally long); a correct completion gets ``λ``, a wrong one
  ``min(0, λ)``. Groups: ``num_generations`` consecutive completions (TRL puts the
  ``num_generations`` completions of a prompt next to each other), or, without it,
  completions with the same ``prompts`` value.
* :func:`l1_length_reward` — L1's (LCPO) target-length reward: ``exact`` mode
  ``1[correct] − α·|n_target − n|``; ``max`` mode ``1[correct]·clip(α·(n_target − n) + δ, 0, 1)``
  (α = 0.0003, δ = 0.5 by default). ``n_target`` comes from a dataset column
  (``target_tokens``) or a fixed ``target``.

Length ``n`` is measured by ``length``: ``"tokens"`` (default: the project's token counter,
OpenAI's o200k BPE via ``bpe-openai``, :func:`~effreason_agents.adapters.tiers.estimate_tokens`),
``"chars"``, ``"completion_ids"`` (the policy's own token count: the ``completion_ids`` TRL
passes), or any callable ``str -> int`` (e.g. ``lambda s: len(tokenizer.encode(s))``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from effreason_agents.core.prompts import parse_answer
from effreason_agents.evaluation.tasks import TaskItem, check_answer

__all__ = [
    "LengthMeasure",
    "RewardFunc",
    "completion_text",
    "correctness_reward",
    "group_indices",
    "kimi_length_reward",
    "kimi_lambdas",
    "l1_length_reward",
    "l1_reward",
]

RewardFunc = Callable[..., list[float]]
LengthMeasure = str | Callable[[str], int]

_ANSWER_TYPES = ("number", "choice", "yesno", "date", "text")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is; a message list: the last assistant
    message's content (the last message's, when none is marked assistant); a message: its content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        if not messages:
            raise TypeError(f"a conversational completion must be a list of messages, got {completion!r:.80}")
        assistant = [m for m in messages if m.get("role") == "assistant"]
        return _content((assistant or messages)[-1].get("content"))
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # content parts: [{"type": "text", "text": ...}]
        return "".join(str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in content)
    return str(content)


def _column(kwargs: Mapping[str, Any], key: str, n: int, what: str) -> list[Any]:
    if key not in kwargs:
        cols = ", ".join(sorted(k for k in kwargs if k not in ("trainer_state",))) or "none"
        raise KeyError(f"the {what} reward needs the dataset column {key!r}; columns passed: {cols}")
    values = kwargs[key]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        values = [values] * n
    if len(values) != n:
        raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")
    return list(values)


def _grade(text: str, gold: Any, answer_type: str) -> bool:
    if gold is None:
        return False
    kind = answer_type if answer_type in _ANSWER_TYPES else "text"
    try:
        item = TaskItem(id="reward", question="reward", answer=str(gold), type=kind,  # type: ignore[arg-type]
                        difficulty="medium", category="reward")
    except ValueError as exc:
        raise ValueError(f"gold answer {gold!r} is not a valid {kind!r} answer: {exc}") from None
    return check_answer(parse_answer(text).answer, item)


def _correct(completions: Sequence[Any], kwargs: Mapping[str, Any], answer_key: str, type_key: str,
             default_type: str, what: str) -> list[bool]:
    n = len(completions)
    answers = _column(kwargs, answer_key, n, what)
    types = _column(kwargs, type_key, n, what) if type_key in kwargs else [default_type] * n
    return [_grade(completion_text(c), a, str(t)) for c, a, t in zip(completions, answers, types)]


def _named(fn: RewardFunc, name: str) -> RewardFunc:
    fn.__name__ = fn.__qualname__ = name  # TRL logs each reward under its function's name
    return fn


def correctness_reward(
    answer_key: str = "answer", type_key: str = "answer_type", *, default_type: str = "number"
) -> RewardFunc:
    """1.0 for a completion whose answer is the gold one (column ``answer_key``) under its
    answer type (column ``type_key``; missing column: ``default_type``), else 0.0."""

    def correctness(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [1.0 if ok else 0.0 for ok in
                _correct(completions, kwargs, answer_key, type_key, default_type, "correctness")]

    return _named(correctness, "correctness")


def _lengths(completions: Sequence[Any], kwargs: Mapping[str, Any], length: LengthMeasure) -> list[int]:
    texts = [completion_text(c) for c in completions]
    if callable(length):
        return [int(length(t)) for t in texts]
    if length == "chars":
        return [len(t) for t in texts]
    if length == "tokens":
        from effreason_agents.adapters.tiers import estimate_tokens

        return [estimate_tokens(t) for t in texts]
    if length == "completion_ids":
        ids = _column(kwargs, "completion_ids", len(completions), "length")
        return [len(x) for x in ids]
    raise ValueError(f"unknown length measure {length!r}; use 'tokens', 'chars', 'completion_ids' or a callable")


def _group_key(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def group_indices(n: int, *, num_generations: int | None = None, prompts: Sequence[Any] | None = None) -> list[list[int]]:
    """The completions' indices grouped by prompt: ``num_generations`` consecutive ones, or
    equal ``prompts`` values (in first-seen order). ``ValueError`` when neither is given or
    ``n`` is not a multiple of ``num_generations``."""
    if num_generations is not None:
        if num_generations < 1 or n % num_generations:
            raise ValueError(f"{n} completions do not split into groups of num_generations={num_generations}")
        return [list(range(i, i + num_generations)) for i in range(0, n, num_generations)]
    if prompts is None:
        raise ValueError("group the completions by prompt: pass num_generations=... or the 'prompts' column")
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} completions")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(_group_key(p), []).append(i)
    return list(groups.values())


def kimi_lambdas(lengths: Sequence[int]) -> list[float]:
    """Kimi 1.5's ``λ = 0.5 − (len − min_len)/(max_len − min_len)`` for one group (all 0 when
    every length is equal)."""
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    return [0.5 - (n - lo) / (hi - lo) for n in lengths]


def kimi_length_reward(
    num_generations: int | None = None,
    *,
    group_key: str = "prompts",
    answer_key: str = "answer",
    type_key: str = "answer_type",
    default_type: str = "number",
    length: LengthMeasure = "tokens",
) -> RewardFunc:
    """Kimi 1.5's length reward: per group of completions of one prompt, ``λ`` for a correct
    completion and ``min(0, λ)`` for a wrong one (see the module docstring). Groups are
    ``num_generations`` consecutive completions, or (``None``) completions with equal
    ``group_key`` values (TRL passes ``prompts``). Correctness as :func:`correctness_reward`."""

    def kimi_length(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        correct = _correct(completions, kwargs, answer_key, type_key, default_type, "Kimi length")
        lengths = _lengths(completions, kwargs, length)
        prompts = None if num_generations is not None else _column(kwargs, group_key, n, "Kimi length")
        rewards = [0.0] * n
        for group in group_indices(n, num_generations=num_generations, prompts=prompts):
            for i, lam in zip(group, kimi_lambdas([lengths[i] for i in group])):
                rewards[i] = lam if correct[i] else min(0.0, lam)
        return rewards

    return _named(kimi_length, "kimi_length")


def l1_reward(correct: bool, n: int, n_target: float, *, mode: str = "max", alpha: float = 0.0003,
              delta: float = 0.5) -> float:
    """L1's reward for one completion of ``n`` tokens against ``n_target``:
    ``exact``: ``1[correct] − α·|n_target − n|``; ``max``: ``1[correct]·clip(α·(n_target − n) + δ, 0, 1)``."""
    if mode == "exact":
        return (1.0 if correct else 0.0) - alpha * abs(n_target - n)
    if mode == "max":
        return (1.0 if correct else 0.0) * min(1.0, max(0.0, alpha * (n_target - n) + delta))
    raise ValueError(f"unknown L1 mode {mode!r}; use 'exact' or 'max'")


def l1_length_reward(
    mode: str = "max",
    *,
    target: float | None = None,
    target_key: str = "target_tokens",
    alpha: float = 0.0003,
    delta: float = 0.5,
    answer_key: str = "answer",
    type_key: str = "answer_type",
    default_type: str = "number",
    length: LengthMeasure = "tokens",
) -> RewardFunc:
    """L1's target-length reward (``mode`` ``"exact"`` or ``"max"``, see :func:`l1_reward`).
    ``n_target`` is the column ``target_key`` per completion, or the fixed ``target`` when
    given. Correctness as :func:`correctness_reward`."""
    if mode not in ("exact", "max"):
        raise ValueError(f"unknown L1 mode {mode!r}; use 'exact' or 'max'")
    if alpha < 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if target is not None and (not math.isfinite(target) or target < 0):
        raise ValueError(f"target must be a finite number of tokens >= 0, got {target}")

    def l1_length(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        correct = _correct(completions, kwargs, answer_key, type_key, default_type, "L1 length")
        lengths = _lengths(completions, kwargs, length)
        targets = [target] * n if target is not None else _column(kwargs, target_key, n, "L1 length")
        return [l1_reward(ok, m, float(t), mode=mode, alpha=alpha, delta=delta)
                for ok, m, t in zip(correct, lengths, targets)]

    return _named(l1_length, f"l1_length_{mode}")
