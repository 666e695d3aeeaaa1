"""Where git actions come from and where they are cached: environment, ``flowray.toml`` files,
defaults."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowray.actions.errors import ActionError
from flowray.actions.names import owner_problem, url_problem
from flowray.store.places import default_actions_dir

CONFIG_FILE = "flowray.toml"
DEFAULT_BASE = "https://github.com"
DEFAULT_OWNERS: Mapping[str, str] = {"datatorch": "datatorch-actions"}

_KEYS = ("base", "cache-dir", "offline", "system-site-packages", "owners")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/flowray/actions`` (``~/.cache/flowray/actions`` when unset)."""
    return default_actions_dir()


def user_config_file() -> str:
    """``$XDG_CONFIG_HOME/flowray/flowray.toml`` (``~/.config/...`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "flowray", CONFIG_FILE)


@dataclass(frozen=True)
class ActionsConfig:
    """How git actions are found and cached."""

    base: str = DEFAULT_BASE  # owner/repo -> <base>/owner/repo
    owners: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_OWNERS), hash=False
    )  # owner -> the owner whose repositories hold its actions
    cache_dir: str = field(default_factory=default_cache_dir)
    offline: bool = False  # never reach a git server; use the cache only
    system_site_packages: bool = False  # action virtualenvs see the interpreter's packages


def load_config(workspace: str, *, offline: bool | None = None) -> ActionsConfig:
    """The configuration for a run in ``workspace``.

    Precedence: ``offline`` (the ``--offline`` flag) > environment (``FLOWRAY_ACTIONS_BASE``,
    ``FLOWRAY_OFFLINE``, ``FLOWRAY_CACHE_DIR``, ``FLOWRAY_ACTIONS_SYSTEM_SITE_PACKAGES``) >
    ``<workspace>/flowray.toml`` > the user's ``flowray.toml`` > defaults. ``[actions.owners]``
    maps are merged in the same order.
    """
    values: dict[str, Any] = {}
    owners: dict[str, str] = dict(DEFAULT_OWNERS)
    for path in (user_config_file(), os.path.join(workspace, CONFIG_FILE)):
        table = _read(path)
        owners.update(table.pop("owners", {}))
        values.update(table)
    env = os.environ
    if "FLOWRAY_ACTIONS_BASE" in env:
        base = env["FLOWRAY_ACTIONS_BASE"]
        problem = url_problem(base)
        if problem:
            raise ActionError(f"FLOWRAY_ACTIONS_BASE: {problem}")
        values["base"] = base
    if env.get("FLOWRAY_CACHE_DIR"):
        values["cache_dir"] = os.path.abspath(os.path.expanduser(env["FLOWRAY_CACHE_DIR"]))
    for var, key in (
        ("FLOWRAY_OFFLINE", "offline"),
        ("FLOWRAY_ACTIONS_SYSTEM_SITE_PACKAGES", "system_site_packages"),
    ):
        if var in env:
            values[key] = _env_flag(var, env[var])
    if offline is not None:
        values["offline"] = offline
    return ActionsConfig(owners=owners, **values)


def _env_flag(var: str, text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ActionError(f"{var} must be 1 or 0, not '{text}'")


def _read(path: str) -> dict[str, Any]:
    """The ``[actions]`` table of one config file, checked, with dataclass field names."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ActionError(f"{path}: cannot read: {exc.strerror}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ActionError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ActionError(f"{path}: invalid TOML: {exc}") from None
    table = doc.get("actions")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ActionError(f"{path}: 'actions' must be a table ([actions])")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _KEYS:
            import difflib

            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(_KEYS)})"
            raise ActionError(f"{path}: unknown key 'actions.{key}'{hint}")
        where = f"{path}: actions.{key}"
        if key in ("offline", "system-site-packages"):
            if not isinstance(value, bool):
                raise ActionError(f"{where} must be true or false, not {_show(value)}")
            out[key.replace("-", "_")] = value
        elif key == "base":
            if not isinstance(value, str):
                raise ActionError(f"{where} must be a string, not {_show(value)}")
            problem = url_problem(value)
            if problem:
                raise ActionError(f"{where}: {problem}")
            out["base"] = value
        elif key == "cache-dir":
            if not isinstance(value, str) or not value:
                raise ActionError(f"{where} must be a folder name, not {_show(value)}")
            folder = os.path.expanduser(value)
            out["cache_dir"] = os.path.abspath(
                os.path.join(os.path.dirname(os.path.abspath(path)), folder)
            )
        else:
            out["owners"] = _owners(where, value)
    return out


def _owners(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ActionError(f"{where} must be a table ([actions.owners]), not {_show(value)}")
    owners: dict[str, str] = {}
    for owner, target in value.items():
        if not isinstance(target, str):
            raise ActionError(f"{where}.{owner} must be a string, not {_show(target)}")
        problem = owner_problem(owner) or owner_problem(target)
        if problem:
            raise ActionError(f"{where}.{owner}: {problem}")
        owners[owner] = target
    return owners


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
