"""Configuration: the same schema validates Snakemake's config and the package's CLI config."""

from __future__ import annotations

import copy
import difflib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ccafl.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(UserError, ValueError):
    """A configuration that does not follow the schema, or whose keys contradict each other."""


def load_schema() -> dict:
    return copy.deepcopy(_schema())


@lru_cache(maxsize=1)
def _schema() -> dict:
    """Parsed once per process: the workflow validates every ablation run's config with it."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


def _fill_defaults(node: dict, schema: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if isinstance(node.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(node[key], sub)


def _describe(error: jsonschema.ValidationError) -> str:
    """One short clause per schema violation, naming the key (never the schema itself)."""
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        clauses = []
        for key in sorted(set(error.instance) - set(allowed)):
            name = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            clauses.append(f"config key {name} is unknown ({hint})")
        if clauses:
            return "; ".join(clauses)
    return f"config key {where or '<top level>'}: {error.message}"


def validate(config: dict) -> dict:
    """Return a validated copy of ``config`` with schema defaults filled in."""
    config = copy.deepcopy(config)
    _fill_defaults(config, _schema())  # copies the defaults it fills in
    errors = sorted(
        _validator().iter_errors(config),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        raise ConfigError("; ".join(map(_describe, errors)) + " (keys: docs/configuration.md)")
    return config


_NULLS = {"null", "Null", "NULL", "~"}
_BOOLEANS = {"true": True, "True": True, "TRUE": True}
_BOOLEANS |= {"false": False, "False": False, "FALSE": False}
_INTEGER = re.compile(r"^[-+]?\d+$")


def _allowed_types(schema: dict) -> set[str]:
    declared = schema.get("type")
    if declared is not None:
        return {declared} if isinstance(declared, str) else set(declared)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return {names.get(type(v), "object") for v in schema.get("enum", [])}


def _typed_scalar(text: str, schema: dict) -> Any:
    """The number, boolean or null that ``text`` spells, where ``schema`` asks for one."""
    types, enum = _allowed_types(schema), schema.get("enum")
    if "null" in types and text in _NULLS:
        return None  # YAML's null where the schema allows one (clip.pretrained: null)
    if "string" in types and (enum is None or text in enum):
        return text  # a string the schema accepts stays a string (a root named "2024", say)
    candidates: list[Any] = []
    if "boolean" in types and text in _BOOLEANS:
        candidates.append(_BOOLEANS[text])
    if types & {"integer", "number"} and _INTEGER.match(text):
        candidates.append(int(text))
    elif "number" in types:
        try:
            candidates.append(float(text))
        except ValueError:
            pass
    for value in candidates:
        if enum is None or value in enum:
            return value
    return text  # not parseable: validation names the key and the expected type


def coerce_to_schema(value: Any, schema: dict | None = None) -> Any:
    """Turn strings into the numbers, booleans and nulls the schema asks for; in place.

    Why: Snakemake parses a nested ``--config 'train={"epochs": 3}'`` with YAML's BaseLoader,
    which keeps every scalar a string, so validation would fail with "'3' is not of type
    'integer'". Only a string in a place where the schema wants an integer, number, boolean or
    null, and that parses as one, is converted; anything else is left for validation to report.
    """
    schema = load_schema() if schema is None else schema
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        others = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, others if isinstance(others, dict) else None)
            if sub is not None:
                value[key] = coerce_to_schema(item, sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [coerce_to_schema(item, schema["items"]) for item in value]
        return value
    if isinstance(value, str):
        return _typed_scalar(value, schema)
    return value


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def select_keys(config: dict, keys: tuple[str, ...] | list[str]) -> dict:
    """The parts of ``config`` that ``keys`` name: a section ("train") or one key in it
    ("train.seed", "train.losses.ical"), nested as in the config.

    Why: a rule passes a stage exactly the keys the stage reads, as a param, so Snakemake
    reruns the stage when one of those changes and only then.
    """
    selected: dict[str, Any] = {}
    for key in keys:
        parts = key.split(".")
        node, target = config, selected
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"config key {'.'.join(parts[: depth + 1])} does not exist")
            node = node[part]
            if depth < len(parts) - 1:
                target = target.setdefault(part, {})
            else:
                target[part] = copy.deepcopy(node)
    return selected


def restrict_to(config: dict, shape: dict) -> dict:
    """``config`` with only the keys that ``shape`` (a --set JSON) holds.

    Why: with ``CCAFL_STRICT_CONFIG=1`` (the end-to-end tests) a stage sees only the keys its
    rule passes, so reading any other key fails loudly instead of silently taking the default,
    which would hide a rule whose params miss a key the stage depends on.
    """
    restricted = {}
    for key, sub in shape.items():
        if key in config:
            value = config[key]
            both_dicts = isinstance(sub, dict) and isinstance(value, dict)
            restricted[key] = restrict_to(value, sub) if both_dicts else value
    return restricted


def read_config_file(path: Path) -> dict:
    """A YAML config file as a dict, or a ConfigError naming the file and line at fault."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{at}: not valid YAML ({problem})") from error
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping of sections")
    return config


def parse_overrides(text: str) -> dict:
    """The JSON of ``--set``, or a one-line ConfigError saying where it breaks."""
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ConfigError(
            f"--set is not valid JSON ({error.msg} at column {error.colno}): {shown!r}; "
            """write it in single quotes with double-quoted keys, e.g. --set '{"train": {"epochs": 5}}'"""
        ) from error
    if not isinstance(overrides, dict):
        raise ConfigError(f"--set must be a JSON object of config sections, got {text!r}")
    return overrides


def load_config(path: str | Path | None = None, overrides: str | dict | None = None) -> dict:
    """Load a YAML config (or nothing: all defaults), merge JSON overrides, validate."""
    config: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (--config takes a YAML file)")
        config = read_config_file(path)
    if overrides:
        if isinstance(overrides, str):
            overrides = parse_overrides(overrides)
        config = deep_merge(config, overrides)
    return validate(config)
