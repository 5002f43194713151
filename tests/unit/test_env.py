"""Which plain variables look like secrets: names, and the values that cannot be credentials."""

from __future__ import annotations

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._job.env import is_secret_like

INFO = StepRunInfo(run_id="r", step_run_id="a", pipeline_step_name="t", images={"default": "i:1"})

# What ZenML 0.98 sets for every step (orchestrators/utils.py get_config_environment_vars).
ZENML_ENVIRONMENT = {
    "ZENML_USER_ID": "6f4c0d9a-0000-4000-8000-000000000000",
    "ZENML_VERSION": "0.98.0",
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ACTIVE_STACK_ID": "6f4c0d9a-0000-4000-8000-000000000001",
    "ZENML_ACTIVE_PROJECT_ID": "6f4c0d9a-0000-4000-8000-000000000002",
    "ZENML_STORE_TYPE": "rest",
    "ZENML_STORE_URL": "https://zenml.example.com",
    "ZENML_SECRETS_STORE_TYPE": "sql",
    "DISABLE_CREDENTIALS_DISK_CACHING": "true",
    "ZENML_STEP_OPERATOR": "True",
}


def env_of(environment: dict[str, str], **settings: object) -> list[dict[str, object]]:
    job = build_job(INFO, ["x"], environment, KubernetesJobStepOperatorSettings(**settings))
    env: list[dict[str, object]] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_zenml_steps_are_accepted() -> None:
    env = env_of(ZENML_ENVIRONMENT)
    assert {"name": "DISABLE_CREDENTIALS_DISK_CACHING", "value": "true"} in env


def test_a_token_is_still_refused() -> None:
    with pytest.raises(ConfigurationError) as exc:
        env_of({"HF_TOKEN": "abc"})
    assert exc.value.field == "environment['HF_TOKEN']"
    assert "abc" not in str(exc.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HF_TOKEN", "abc"),
        ("HF_TOKEN", "hf_0123456789abcdef"),
        ("DB_PASSWORD", "hunter2"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
        ("OPENAI_API_KEY", "sk-123"),
        ("GITHUB_TOKEN", "12345678901"),  # eleven digits: not a small number
        ("CREDENTIALS", "yes please"),
        ("ZENML_STORE_API_TOKEN", "eyJhbGciOi"),
        ("HF_TOKEN", None),
    ],
)
def test_secret_like(name: str, value: str | None) -> None:
    assert is_secret_like(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # A flag or a small number carries no secret, whatever the name says.
        ("DISABLE_CREDENTIALS_DISK_CACHING", "true"),
        ("HF_TOKEN_REFRESH", "false"),
        ("USE_AUTH_KEY", "1"),
        ("TOKEN_TTL", "3600"),
        ("PASSWORD_MIN_LENGTH", "12"),
        ("SECRET_ROTATION", "Off"),
        ("HF_TOKEN", ""),
        # A name ending in a flag word is a switch.
        ("CREDENTIALS_CACHING", "disk"),
        ("TOKEN_AUTH_ENABLED", "sometimes"),
        ("PASSWORD_LOGIN_DISABLED", "x"),
        # Not secret words at all.
        ("TOKENIZERS_PARALLELISM", "anything"),
        ("KEYBOARD_LAYOUT", "us"),
    ],
)
def test_not_secret_like(name: str, value: str) -> None:
    assert not is_secret_like(name, value)


def test_the_rule_applies_to_settings_env_too() -> None:
    assert {"name": "HF_TOKEN_REFRESH", "value": "false"} in env_of(
        {}, env={"HF_TOKEN_REFRESH": "false"}
    )
    with pytest.raises(ConfigurationError) as exc:
        env_of({}, env={"HF_TOKEN": "abc"})
    assert exc.value.field == "settings.env['HF_TOKEN']"
    assert {"name": "HF_TOKEN", "value": "abc"} in env_of(
        {}, env={"HF_TOKEN": "abc"}, allow_secret_like_env=True
    )
