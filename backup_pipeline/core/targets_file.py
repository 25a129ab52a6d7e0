"""Reading backup_targets.yaml and checking its shape with pydantic.

The pydantic models only validate (types, ranges, and unknown keys refused with
`extra="forbid"` at both levels); config.py builds the frozen `Target` and
`Settings` from what they return, so nothing else ever sees a pydantic object.
Every problem is a one-line ConfigError naming the file, the key path and the
fix. Values from the file are never echoed: a pasted secret may be among them.
"""

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import ConfigError

ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


class TargetSettings(BaseModel):
    """Settings of one target; each may also be given at the top level as a default for all targets."""

    model_config = ConfigDict(extra="forbid")

    dsn_env: str | None = Field(None, pattern=ENV_VAR)
    storage: str | None = None
    pg_bin_dir: str | None = None
    compression: str | None = None
    compression_level: int | None = None
    retention_days: int | None = Field(None, ge=1)
    schedule: str | None = None
    drill: bool | None = None
    drill_pg_major: int | None = Field(None, ge=1)
    assertions: Annotated[list[str] | None, BeforeValidator(_one_or_many)] = None
    restore_destination: bool | None = None
    protected: bool | None = None
    standby_dsn_env: str | None = Field(None, pattern=ENV_VAR)
    migrations_table: str | None = None
    keep_daily: int | None = Field(None, ge=0)
    keep_weekly: int | None = Field(None, ge=0)
    keep_monthly: int | None = Field(None, ge=0)
    delete_expired_objects: bool | None = None
    min_good_backups: int | None = Field(None, ge=1)
    age_recipients: Annotated[list[str] | None, BeforeValidator(_one_or_many)] = None  # public keys only
    tripwire_drop_share: float | None = Field(None, gt=0, le=1)
    tripwire_min_rows: int | None = Field(None, ge=0)
    tripwire_pin: bool | None = None
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    copies: Annotated[list[str] | None, BeforeValidator(_one_or_many)] = None
    dump_jobs: int | None = None  # parallel pg_dump workers (directory format); range checked in config.py


class TargetsFile(TargetSettings):
    targets: dict[str, TargetSettings]
    history_url: str | None = None
    stage_dir: str | None = None


def read_targets_file(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(top-level settings, {target name: its settings}), each holding only the keys the file sets."""
    data = _load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict) or not data["targets"]:
        raise ConfigError(f"targets file {path} needs a 'targets:' mapping of name -> settings")
    data = {**data, "targets": {str(name): settings for name, settings in data["targets"].items()}}
    try:
        parsed = TargetsFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        more = f" (and {len(errors) - 1} more problem(s) in the file)" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {_describe(errors[0])}{more}") from None
    top = parsed.model_dump(exclude_unset=True, exclude={"targets"})
    targets = {name: settings.model_dump(exclude_unset=True) for name, settings in parsed.targets.items()}
    return top, targets


def _load_yaml(path: str) -> object:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"targets file {path} does not exist: create it or unset BACKUP_TARGETS_FILE") from None
    except OSError as exc:
        raise ConfigError(f"targets file {path} cannot be read ({exc.strerror}): point BACKUP_TARGETS_FILE at a readable YAML file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"targets file {path} is not UTF-8 text (undecodable byte at offset {exc.start}): "
            "it must be a YAML file; check that BACKUP_TARGETS_FILE names the right file"
        ) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"targets file {path} holds a binary character (#x{exc.character:04x}) at position {exc.position}: "
            "it must be a YAML text file; check that BACKUP_TARGETS_FILE names the right file"
        ) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"targets file {path} is not valid YAML: {problem}{where}: fix the syntax there") from None


_EXPECTED = {
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "bool_parsing": "must be true or false",
    "bool_type": "must be true or false", "string_type": "must be text (quote it)",
    "list_type": "must be a file path or a list of them", "model_type": "must be a mapping of setting: value",
    "model_attributes_type": "must be a mapping of setting: value", "dict_type": "must be a mapping of name: settings",
    "missing": "is required",
}


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    key_path = ".".join(loc) or "the file"
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(key_path, loc[-1], TargetSettings if len(loc) > 1 else TargetsFile)
    if kind == "string_pattern_mismatch":
        return f"{key_path} must name an environment variable (letters, digits, _), never hold the URL itself"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{key_path} must be at least {error['ctx'].get('ge', error['ctx'].get('gt'))}"
    expected = _EXPECTED.get(kind) or error["msg"][:1].lower() + error["msg"][1:]
    return f"{key_path} {expected}"


def _unknown_key(key_path: str, key: str, model: type[BaseModel]) -> str:
    if key in ("dsn", "url", "database_url"):
        return f"{key_path} is an unknown setting: put the URL in an environment variable and name it with dsn_env"
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    fix = f"did you mean {close[0]}?" if close else f"allowed: {', '.join(allowed)}"
    return f"{key_path} is an unknown setting: {fix}"
