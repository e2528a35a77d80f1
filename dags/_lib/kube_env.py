"""How the Kubernetes runner reads its environment: the ``FLYWHEEL_K8S_*`` variables' parsing and messages
(naming the variable), and which settings of this environment a pod gets (never a secret-looking one)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "FLYWHEEL_K8S_"
XCOM_ENV = "FLYWHEEL_XCOM_FILE"  # ml_tasks/jsonout.py writes the summary there when set

#: settings the pod never gets through its spec (they would be readable by anyone who can read pods)
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|PRIVATE|_KEY($|_)|POSTGRES_URI|DSN")
#: DAG/runner settings of this environment that mean nothing inside a pod
NOT_FOR_PODS = ("FLYWHEEL_RUNNER", ENV_PREFIX, XCOM_ENV)


def var_name(field: str) -> str:
    """The environment variable of a :class:`~_lib.kube.KubeSettings` field."""
    if field.startswith("FLYWHEEL_"):  # an alias: the variable's own name
        return field
    return "FLYWHEEL_DATA_ROOT" if field == "data_root" else f"{ENV_PREFIX}{field.upper()}"


def parse_json(var: str, raw: str, kind: type) -> Any:
    """``raw`` (the value of ``var``) as JSON of type ``kind``, or a ValueError naming ``var``."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{var} is not valid JSON ({exc}): {raw[:200]!r}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{var} must be a JSON {kind.__name__}, got {type(value).__name__}: {raw[:200]!r}")
    return value


def str_map(value: Mapping[str, Any], what: str) -> dict[str, str]:
    """``value`` with every item a string (numbers converted), or a ValueError naming ``what[key]``."""
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise ValueError(f"{what}[{key!r}] must be a string or number, got {item!r}")
        out[str(key)] = str(item)
    return out


def explain(exc: ValidationError) -> str:
    """The validation errors as messages naming the environment variable and its value."""
    messages = []
    for error in exc.errors():
        var = var_name(str(error["loc"][0])) if error["loc"] else ""
        raw, ctx, kind = error["input"], error.get("ctx", {}), error["type"]
        if kind == "value_error":
            messages.append(str(ctx["error"]))  # our own validators name the variable already
        elif kind in ("int_parsing", "int_type"):
            messages.append(f"{var}={raw!r} is not an integer")
        elif kind == "greater_than_equal":
            messages.append(f"{var}={raw} must be >= {ctx['ge']}")
        elif kind == "bool_parsing":
            messages.append(f"{var}={raw!r} is not a boolean (true/false)")
        else:
            messages.append(f"{var}={raw!r}: {error['msg']}")
    return "; ".join(messages)


def env_for_pods(env: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The settings of this environment every pod gets, and the secret-looking names left out."""
    passed: dict[str, str] = {}
    withheld: list[str] = []
    for name in sorted(env):
        if not name.startswith("FLYWHEEL_") or name.startswith(NOT_FOR_PODS):
            continue
        if SECRET_NAME.search(name):
            withheld.append(name)
            continue
        passed[name] = env[name]
    if env.get("MLFLOW_TRACKING_URI", "").strip():
        passed["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    return passed, tuple(withheld)


#: the environment :meth:`KubeSettings.from_env` reads (None: this process's)
ENV: ContextVar[Mapping[str, str] | None] = ContextVar("flywheel_kube_env", default=None)


class MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source over a given mapping instead of ``os.environ`` (as its dotenv source
    does with a file's variables)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )
