"""Strict readers for settings taken from the environment.

Only `compliance/settings.py` calls these. A value that cannot be parsed raises at start-up with a
message that names the variable, so a typo in a deployment fails loudly instead of silently
falling back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigurationError(RuntimeError):
    """A setting is missing or malformed."""


def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """A string from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    env = os.environ if environ is None else environ
    file_var = f"{name}_FILE"
    if env.get(file_var):
        path = Path(env[file_var])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"{file_var} points to {path}, which cannot be read: {exc.strerror}") from exc
    value = env.get(name)
    if value is None or value == "":
        return default
    return value


def env_required(name: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = env_str(name, environ=environ)
    if value is None:
        raise ConfigurationError(f"{name} (or {name}_FILE) must be set in production")
    return value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    """true/false/1/0/yes/no/on/off, case-insensitive; anything else raises."""
    value = env_str(name, environ=environ)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int, *, environ: Mapping[str, str] | None = None, minimum: int | None = None) -> int:
    value = env_str(name, environ=environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, not {value!r}") from exc
    if minimum is not None and number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    value = env_str(name, environ=environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]
