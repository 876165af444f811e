"""Configuration: defaults, TOML merge, environment overrides, validation messages."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest

from effreason_agents.config import (
    DEFAULT_LARGE_MODEL,
    OPENAI_DEFAULT_BASE_URL,
    ArmConfig,
    Config,
    config_from_data,
    default_config_data,
    load_config,
)
from effreason_agents.errors import ConfigError, EffReasonError

TOML_FILE = """\
ladder = ["small:direct", "mid:terse:50", { tier = "mid", strategy = "cot" }]

[tiers.small]
price_input_per_1m = "0.07"

[tiers.mid]
engine = "openai-compatible"
model = "mid-model"
base_url = "http://127.0.0.1:9/v1/"
price_input_per_1m = "0.30"
price_output_per_1m = "1.20"

[strategies.terse]
kind = "cod"
max_tokens = 99
word_limit = 3
"""


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty directory, so no stray effreason.toml is picked up."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def invalid(mutate: Callable[[dict[str, Any]], None]) -> str:
    """The ConfigError message for the default config after ``mutate``."""
    data = copy.deepcopy(default_config_data({}))
    mutate(data)
    with pytest.raises(ConfigError) as err:
        config_from_data(data, "test")
    return str(err.value)


# -- defaults ---------------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    cfg = load_config(environ={})
    assert cfg.source == "built-in default"
    assert set(cfg.tiers) == {"small", "large"}
    small, large = cfg.tiers["small"], cfg.tiers["large"]
    assert small.engine == "embedded"
    assert small.price_input_per_1m == 0 and small.price_output_per_1m == 0
    assert large.model == DEFAULT_LARGE_MODEL
    assert large.base_url == OPENAI_DEFAULT_BASE_URL
    assert large.price_input_per_1m == Decimal("0.15")
    assert large.price_output_per_1m == Decimal("0.60")
    assert [a.name for a in cfg.ladder] == ["small:direct", "small:cot", "large:cod", "large:cot"]
    assert cfg.escalation.confidence_threshold is None  # the calibrator's fitted threshold, else 0.5
    assert cfg.escalation.calibrators == "builtin"
    assert cfg.budget.max_cost_usd is None


def test_large_tier_disabled_without_openai_key() -> None:
    cfg = load_config(environ={})
    assert set(cfg.enabled_tiers({})) == {"small"}
    assert [a.tier for a in cfg.usable_ladder({})] == ["small", "small"]


def test_large_tier_enabled_with_openai_key() -> None:
    env = {"OPENAI_API_KEY": "sk-test"}
    cfg = load_config(environ=env)
    assert set(cfg.enabled_tiers(env)) == {"small", "large"}
    assert [a.name for a in cfg.usable_ladder(env)] == ["small:direct", "small:cot", "large:cod", "large:cot"]


def test_empty_openai_key_counts_as_unset() -> None:
    env = {"OPENAI_API_KEY": ""}
    assert "large" not in load_config(environ=env).enabled_tiers(env)


def test_explicit_enabled_flag_beats_auto() -> None:
    data = default_config_data({})
    data["tiers"]["large"]["enabled"] = True
    data["tiers"]["small"]["enabled"] = False
    cfg = config_from_data(data)
    assert set(cfg.enabled_tiers({})) == {"large"}


def test_openai_base_url_and_large_model_from_environment() -> None:
    cfg = load_config(
        environ={"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1/", "EFFREASON_LARGE_MODEL": "my-large"}
    )
    assert cfg.tiers["large"].base_url == "http://127.0.0.1:8000/v1"  # trailing slash trimmed
    assert cfg.tiers["large"].model == "my-large"


# -- TOML files -------------------------------------------------------------------------


def test_effreason_toml_in_cwd_merges_into_defaults(empty_cwd: Path) -> None:
    write(empty_cwd / "effreason.toml", TOML_FILE)
    cfg = load_config(environ={})
    assert cfg.source.endswith("effreason.toml")
    small = cfg.tiers["small"]
    assert small.price_input_per_1m == Decimal("0.07")
    # keys the file does not mention keep their defaults
    assert small.engine == "embedded" and small.context_window == 2048
    assert small.capabilities.assistant_prefill is True
    assert "large" in cfg.tiers and "direct" in cfg.strategies
    mid = cfg.tiers["mid"]
    assert (mid.model, mid.base_url, mid.price_output_per_1m) == ("mid-model", "http://127.0.0.1:9/v1", Decimal("1.20"))
    assert cfg.strategies["terse"].word_limit == 3
    assert [a.name for a in cfg.ladder] == ["small:direct", "mid:terse:50", "mid:cot"]
    assert cfg.arm_max_tokens(cfg.ladder[1]) == 50
    assert cfg.arm_max_tokens(cfg.ladder[2]) == cfg.strategies["cot"].max_tokens


def test_effreason_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.toml", '[escalation]\nconfidence_threshold = 0.8\n')
    cfg = load_config(environ={"EFFREASON_CONFIG": str(path)})
    assert cfg.escalation.confidence_threshold == 0.8
    assert cfg.source == str(path)


def test_explicit_path_beats_effreason_config_and_cwd(tmp_path: Path, empty_cwd: Path) -> None:
    write(empty_cwd / "effreason.toml", "[escalation]\nconfidence_threshold = 0.1\n")
    env_file = write(tmp_path / "env.toml", "[escalation]\nconfidence_threshold = 0.2\n")
    explicit = write(tmp_path / "explicit.toml", "[escalation]\nconfidence_threshold = 0.3\n")
    cfg = load_config(explicit, environ={"EFFREASON_CONFIG": str(env_file)})
    assert cfg.escalation.confidence_threshold == 0.3
    assert load_config(environ={"EFFREASON_CONFIG": str(env_file)}).escalation.confidence_threshold == 0.2
    assert load_config(environ={}).escalation.confidence_threshold == 0.1


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_missing_effreason_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EFFREASON_CONFIG"):
        load_config(environ={"EFFREASON_CONFIG": str(tmp_path / "nope.toml")})


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[tiers.small\nprice = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(path, environ={})
    assert "bad.toml" in str(err.value)


def test_invalid_value_in_file_names_the_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "neg.toml", "[tiers.small]\nprice_output_per_1m = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    msg = str(err.value)
    assert "neg.toml" in msg and "tiers.small.price_output_per_1m" in msg


# -- validation messages ----------------------------------------------------------------


def test_config_error_is_part_of_the_hierarchy() -> None:
    assert issubclass(ConfigError, EffReasonError) and issubclass(ConfigError, ValueError)


def test_negative_price() -> None:
    msg = invalid(lambda d: d["tiers"]["small"].update(price_input_per_1m="-0.01"))
    assert "tiers.small.price_input_per_1m" in msg and "greater than or equal to 0" in msg


def test_unknown_engine() -> None:
    msg = invalid(lambda d: d["tiers"]["small"].update(engine="llamafile"))
    assert "tiers.small.engine" in msg and "openai-compatible" in msg


def test_unknown_tier_in_ladder() -> None:
    msg = invalid(lambda d: d.update(ladder=["small:direct", "medium:cot"]))
    assert "ladder[1]" in msg and "unknown tier 'medium'" in msg


def test_unknown_strategy_in_ladder() -> None:
    msg = invalid(lambda d: d.update(ladder=["small:think"]))
    assert "ladder[0]" in msg and "unknown strategy 'think'" in msg


@pytest.mark.parametrize("arm", ["small", "small:", ":cot", "small:cot:64:extra"])
def test_malformed_arm_string(arm: str) -> None:
    msg = invalid(lambda d: d.update(ladder=[arm]))
    assert "ladder.0" in msg and "tier:strategy" in msg


def test_arm_token_cap_must_be_a_positive_integer() -> None:
    assert "ladder.0.max_tokens" in invalid(lambda d: d.update(ladder=["small:cot:0"]))
    assert "ladder.0.max_tokens" in invalid(lambda d: d.update(ladder=["small:cot:lots"]))


def test_empty_ladder() -> None:
    assert "ladder" in invalid(lambda d: d.update(ladder=[]))


def test_extra_body_only_on_vllm() -> None:
    msg = invalid(lambda d: d["tiers"]["large"].update(extra_body={"top_k": 5}))
    assert "tiers.large" in msg and "extra_body" in msg and "vllm" in msg
    data = default_config_data({})
    data["tiers"]["fleet"] = {
        "engine": "vllm",
        "model": "m",
        "base_url": "http://127.0.0.1:9/v1",
        "extra_body": {"top_k": 5},
    }
    assert config_from_data(data).tiers["fleet"].extra_body == {"top_k": 5}


def test_vllm_tier_needs_base_url() -> None:
    msg = invalid(lambda d: d["tiers"].update(fleet={"engine": "vllm", "model": "m"}))
    assert "tiers.fleet" in msg and "needs base_url" in msg


def test_base_url_scheme() -> None:
    msg = invalid(lambda d: d["tiers"]["large"].update(base_url="api.example.com/v1"))
    assert "tiers.large.base_url" in msg and "http://" in msg


def test_word_limit_zero() -> None:
    msg = invalid(lambda d: d["strategies"]["cod"].update(word_limit=0))
    assert "strategies.cod.word_limit" in msg and "greater than or equal to 1" in msg


@pytest.mark.parametrize("field", ["max_cost_usd", "max_output_tokens", "max_total_tokens"])
def test_negative_budget(field: str) -> None:
    msg = invalid(lambda d: d.update(budget={field: -1}))
    assert f"budget.{field}" in msg and "greater than 0" in msg


def test_start_arm_off_the_ladder_and_threshold_out_of_range() -> None:
    assert "escalation.start_arm.hard" in invalid(lambda d: d.update(escalation={"start_arm": {"hard": "big:cot"}}))
    assert "escalation.confidence_threshold" in invalid(lambda d: d.update(escalation={"confidence_threshold": 1.5}))


def test_unknown_key_is_rejected() -> None:
    msg = invalid(lambda d: d["tiers"]["small"].update(price_per_token=1))
    assert "tiers.small.price_per_token" in msg and "Extra inputs" in msg


def test_all_errors_are_listed() -> None:
    def two_errors(d: dict[str, Any]) -> None:
        d["tiers"]["small"]["price_input_per_1m"] = -1
        d["strategies"]["cot"]["max_tokens"] = 0

    msg = invalid(two_errors)
    assert "tiers.small.price_input_per_1m" in msg and "strategies.cot.max_tokens" in msg


# -- environment overrides --------------------------------------------------------------


def test_effreason_store_override(tmp_path: Path) -> None:
    store = tmp_path / "outcomes.sqlite"
    cfg = load_config(environ={"EFFREASON_STORE": str(store)})
    assert cfg.store.resolved_path() == store
    assert cfg.source == "built-in default + environment"


def test_confidence_threshold_overrides() -> None:
    assert load_config(environ={"EFFREASON_CONFIDENCE_THRESHOLD": "0.7"}).escalation.confidence_threshold == 0.7
    cfg = load_config(environ={"EFFREASON__escalation__confidence_threshold": "0.9"})
    assert cfg.escalation.confidence_threshold == 0.9
    # the rest of the section keeps its defaults
    assert cfg.escalation.start_arm == {"easy": "small:direct", "medium": "small:direct", "hard": "large:cod"}


def test_generic_override_of_a_nested_price() -> None:
    cfg = load_config(environ={"EFFREASON__tiers__large__price_output_per_1m": "0.1"})
    assert cfg.tiers["large"].price_output_per_1m == Decimal("0.1")
    assert cfg.tiers["large"].price_input_per_1m == Decimal("0.15")


def test_environment_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[escalation]\nconfidence_threshold = 0.2\n")
    cfg = load_config(path, environ={"EFFREASON_CONFIDENCE_THRESHOLD": "0.6"})
    assert cfg.escalation.confidence_threshold == 0.6
    assert cfg.source == f"{path} + environment"


def test_invalid_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match="escalation.confidence_threshold"):
        load_config(environ={"EFFREASON__escalation__confidence_threshold": "2"})


def test_override_inside_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="non-table"):
        load_config(environ={"EFFREASON__ladder": '["small:direct"]', "EFFREASON__ladder__x": "1"})


def test_generic_override_sets_a_list_from_json() -> None:
    cfg = load_config(environ={"EFFREASON__ladder": '["small:cot:64"]'})
    assert [a.name for a in cfg.ladder] == ["small:cot:64"]


def test_unrelated_variables_are_ignored() -> None:
    assert load_config(environ={"EFFREASON_OTHER": "x", "HOME": "/nowhere"}).source == "built-in default"


# -- version and arms -------------------------------------------------------------------


def test_version_is_stable_and_ignores_source() -> None:
    a = config_from_data(default_config_data({}), "a.toml")
    b = config_from_data(default_config_data({}), "b.toml")
    assert a.version() == b.version()
    assert len(a.version()) == 12


def test_version_changes_when_a_price_changes() -> None:
    base = config_from_data(default_config_data({}))
    data = default_config_data({})
    data["tiers"]["large"]["price_output_per_1m"] = "0.61"
    assert config_from_data(data).version() != base.version()


@pytest.mark.parametrize(
    ("text", "tier", "strategy", "max_tokens", "name"),
    [
        ("small:cot:64", "small", "cot", 64, "small:cot:64"),
        ("large:direct", "large", "direct", None, "large:direct"),
    ],
)
def test_arm_strings(text: str, tier: str, strategy: str, max_tokens: int | None, name: str) -> None:
    arm = ArmConfig.model_validate(text)
    assert (arm.tier, arm.strategy, arm.max_tokens, arm.name) == (tier, strategy, max_tokens, name)


def test_arm_table_form_equals_string_form() -> None:
    assert ArmConfig.model_validate({"tier": "small", "strategy": "cot", "max_tokens": 64}) == ArmConfig.model_validate(
        "small:cot:64"
    )


def test_config_is_validated_on_assignment() -> None:
    cfg: Config = config_from_data(default_config_data({}))
    with pytest.raises(ValueError):
        cfg.tiers["small"].price_input_per_1m = Decimal(-1)


def test_embedded_context_window_is_bounded_by_the_servers_slot() -> None:
    cfg = config_from_data({**default_config_data({}), "embedded": {"n_ctx": 2048, "n_parallel": 4}})
    assert cfg.tiers["small"].context_window == 2048
    assert cfg.context_window("small") == 512  # 2048 tokens shared by 4 slots
    assert cfg.context_window("large") == cfg.tiers["large"].context_window
