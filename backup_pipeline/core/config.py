"""Targets and settings: which databases to back up, where, and how.

Settings come from a small YAML file (several targets) or from the seeds' own
environment variables (one target). A target names the *environment variable*
that holds its DSN, never the DSN itself, so definitions can be loaded and
shown without any secret, and secrets are read only when a run starts.
Every problem is a ConfigError naming the setting and the fix, raised before
any work starts.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .archive import check_codec
from .errors import ConfigError
from .storage import S3Settings

TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
BACKUP_TYPES = ("daily", "manual", "pre-migration", "post-migration", "pre-restore")
DSN_ENV_VARS = ("DATABASE_URL", "PROD_SUPABASE_DB_URL")
DEFAULT_TARGETS_FILE = "backup_targets.yaml"
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_MIGRATIONS_TABLE = "supabase_migrations.schema_migrations"
LEVELS = {"zstd": (1, 22), "gzip": (0, 9), "none": (0, 22)}  # "none" ignores the level
# zstd 1: on 2 cores shared with pg_dump and the server, level 3 costs ~10% more time for ~20% smaller archives.
DEFAULT_LEVEL = {"zstd": 1, "gzip": 6, "none": 0}


def check_target_name(name: str) -> str:
    if not isinstance(name, str) or not TARGET_NAME_RE.match(name):
        raise ConfigError(
            f"target name {name!r} is not allowed: use 1-63 letters, digits, '-' or '_' "
            "(it becomes part of storage paths, so no '/', '..' or spaces)"
        )
    return name


def check_backup_type(kind: str) -> str:
    if kind not in BACKUP_TYPES:
        raise ConfigError(f"backup type {kind!r} is not one of {', '.join(BACKUP_TYPES)}")
    return kind


def check_storage_url(url: str, setting: str = "storage") -> str:
    parts = urlsplit(url or "")
    if parts.scheme == "file" and parts.path.startswith("/") and not parts.netloc:
        return url
    if parts.scheme == "s3" and parts.netloc and "@" not in parts.netloc:
        return url
    raise ConfigError(
        f"{setting} {url!r} is not a storage URL: use file:///absolute/dir or s3://bucket/prefix"
    )


@dataclass(frozen=True)
class Target:
    """A database to back up."""

    name: str
    dsn_env: str
    storage_url: str
    pg_bin_dir: str | None = None
    compression: str = "zstd"
    compression_level: int = DEFAULT_LEVEL["zstd"]
    retention_days: int = 30
    schedule: str | None = DEFAULT_SCHEDULE
    drill: bool = True  # restore-drill every backup; switch off for databases too large to restore daily
    drill_pg_major: int | None = None  # drill server major (default: smallest available >= the source's)
    assertions: tuple[str, ...] = ()  # SQL files run against every drill
    restore_destination: bool = False  # may be restored into (dev/verify); prod targets are not by default
    protected: bool = False  # restoring into it needs confirm=<target name>
    standby_dsn_env: str | None = None  # warm copy refreshed after each verified backup
    migrations_table: str | None = DEFAULT_MIGRATIONS_TABLE  # watched for new versions; None disables
    keep_daily: int | None = None  # grandfather-father-son: newest backup of each of the last N days…
    keep_weekly: int | None = None  # …N ISO weeks…
    keep_monthly: int | None = None  # …and N months are kept past retention_until
    delete_expired_objects: bool = True  # False: expired backups are only marked, their objects stay
    min_good_backups: int = 3  # retention never leaves fewer good (verified) backups than this

    def dsn(self, env: Mapping[str, str] | None = None) -> str:
        return _env_dsn(self.name, self.dsn_env, env)

    def standby_dsn(self, env: Mapping[str, str] | None = None) -> str | None:
        return _env_dsn(self.name, self.standby_dsn_env, env) if self.standby_dsn_env else None


def _env_dsn(target: str, var: str, env: Mapping[str, str] | None) -> str:
    value = (env if env is not None else os.environ).get(var)
    if not value:
        raise ConfigError(
            f"target {target!r}: environment variable {var} is not set: "
            f"set it to the database URL (postgresql://user:password@host:5432/dbname)"
        )
    return value


@dataclass(frozen=True)
class Settings:
    targets: dict[str, Target]
    history_url: str | None
    stage_dir: Path
    s3: S3Settings = field(repr=False)
    source: str

    def target(self, name: str) -> Target:
        check_target_name(name)
        if name not in self.targets and not self.targets:
            raise ConfigError(
                f"unknown target {name!r} (configured: none): set DATABASE_URL or PROD_SUPABASE_DB_URL to the "
                f"database URL (BACKUP_TARGET names that target, default prod), or list targets in "
                f"{DEFAULT_TARGETS_FILE} or the file BACKUP_TARGETS_FILE names"
            )
        if name not in self.targets:
            known = ", ".join(sorted(self.targets))
            raise ConfigError(
                f"unknown target {name!r} (configured: {known}): add it to {DEFAULT_TARGETS_FILE} "
                "or pass its database URL and storage explicitly"
            )
        return self.targets[name]

    def adhoc_target(self, name: str, *, dsn_env: str | None, storage_url: str | None) -> Target:
        """A configured target with overrides, or a new one when both DSN and storage are given."""
        check_target_name(name)
        base = self.targets.get(name)
        if base is None:
            if not dsn_env:
                self.target(name)  # raises the unknown-target error
            base = Target(name=name, dsn_env=dsn_env, storage_url=default_storage_url(os.environ))
        return replace(
            base,
            dsn_env=dsn_env or base.dsn_env,
            storage_url=check_storage_url(storage_url) if storage_url else base.storage_url,
        )


def default_storage_url(env: Mapping[str, str]) -> str:
    if env.get("BACKUP_STORAGE_URL"):
        return check_storage_url(env["BACKUP_STORAGE_URL"], "BACKUP_STORAGE_URL")
    prefix = env.get("BACKUP_PREFIX", "backups").strip("/")
    if env.get("R2_BUCKET"):
        return f"s3://{env['R2_BUCKET']}/{prefix}".rstrip("/")
    if env.get("R2_ENDPOINT"):
        raise ConfigError("R2_ENDPOINT is set but R2_BUCKET is not: set R2_BUCKET (or BACKUP_STORAGE_URL=s3://bucket/prefix)")
    return f"file://{Path.cwd() / 'backups'}"


def default_stage_dir(env: Mapping[str, str]) -> Path:
    if env.get("BACKUP_STAGE_DIR"):
        return Path(env["BACKUP_STAGE_DIR"])
    home = env.get("DAGSTER_HOME") or str(Path.home() / ".backup_pipeline")
    return Path(home) / "stage"


def _target_from_yaml(name: str, raw: object, defaults: dict, path: str) -> Target:
    check_target_name(name)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: target {name!r} must be a mapping with at least dsn_env")
    allowed = {"dsn_env", "storage", "pg_bin_dir", "compression", "compression_level", "retention_days", "schedule",
               "drill", "drill_pg_major", "assertions", "restore_destination", "protected", "standby_dsn_env",
               "migrations_table", "keep_daily", "keep_weekly", "keep_monthly", "delete_expired_objects",
               "min_good_backups"}
    if unknown := set(raw) - allowed:
        raise ConfigError(f"{path}: target {name!r} has unknown setting(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    if "dsn" in raw:
        raise ConfigError(f"{path}: target {name!r}: put the URL in an environment variable and name it with dsn_env")
    merged = {**defaults, **raw}
    if not merged.get("dsn_env"):
        raise ConfigError(f"{path}: target {name!r} needs dsn_env (the environment variable holding its database URL)")
    storage = merged.get("storage")
    if not storage:
        raise ConfigError(f"{path}: target {name!r} needs storage (top-level or per target): file:///dir or s3://bucket/prefix")
    codec = check_codec(str(merged.get("compression", "zstd")))
    try:
        level = int(merged.get("compression_level", DEFAULT_LEVEL[codec]))
        retention = int(merged.get("retention_days", 30))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: target {name!r}: compression_level and retention_days must be integers") from None
    low, high = LEVELS[codec]
    if not low <= level <= high:
        raise ConfigError(f"{path}: target {name!r}: compression_level {level} is out of range for {codec} ({low}-{high})")
    if retention < 1:
        raise ConfigError(f"{path}: target {name!r}: retention_days must be at least 1")
    return Target(
        name=name,
        dsn_env=str(merged["dsn_env"]),
        storage_url=check_storage_url(str(storage), f"{path}: target {name!r} storage"),
        pg_bin_dir=merged.get("pg_bin_dir"),
        compression=codec,
        compression_level=level,
        retention_days=retention,
        schedule=merged.get("schedule", DEFAULT_SCHEDULE) or None,
        drill=bool(merged.get("drill", True)),
        drill_pg_major=int(merged["drill_pg_major"]) if merged.get("drill_pg_major") else None,
        assertions=tuple(_assertion_paths(merged.get("assertions"), path, name)),
        restore_destination=bool(merged.get("restore_destination", False)),
        protected=bool(merged.get("protected", False)),
        standby_dsn_env=merged.get("standby_dsn_env") or None,
        migrations_table=merged.get("migrations_table", DEFAULT_MIGRATIONS_TABLE) or None,
        keep_daily=_count_setting(merged, "keep_daily", path, name),
        keep_weekly=_count_setting(merged, "keep_weekly", path, name),
        keep_monthly=_count_setting(merged, "keep_monthly", path, name),
        delete_expired_objects=bool(merged.get("delete_expired_objects", True)),
        min_good_backups=_min_good_backups(merged, path, name),
    )


def _min_good_backups(merged: dict, path: str, name: str) -> int:
    value = merged.get("min_good_backups", 3)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{path}: target {name!r}: min_good_backups must be a whole number, at least 1")
    return value


def _count_setting(merged: dict, key: str, path: str, name: str) -> int | None:
    value = merged.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{path}: target {name!r}: {key} must be a whole number of backups to keep")
    return value


def _assertion_paths(value: object, path: str, name: str) -> list[str]:
    """Assertion files, relative to the targets file; each must exist."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ConfigError(f"{path}: target {name!r}: assertions must be a file path or a list of them")
    out = []
    for item in items:
        file = Path(item) if Path(item).is_absolute() else Path(path).resolve().parent / item
        if not file.is_file():
            raise ConfigError(f"{path}: target {name!r}: assertion file {file} does not exist")
        out.append(str(file))
    return out


def load_settings(env: Mapping[str, str] | None = None, targets_file: str | None = None) -> Settings:
    env = os.environ if env is None else env
    path = targets_file or env.get("BACKUP_TARGETS_FILE")
    if not path and Path(DEFAULT_TARGETS_FILE).exists():
        path = DEFAULT_TARGETS_FILE
    s3 = S3Settings.from_env(env)
    stage_dir = default_stage_dir(env)
    history_url = env.get("BACKUP_HISTORY_URL")
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"targets file {path} does not exist: create it or unset BACKUP_TARGETS_FILE") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"targets file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("targets"), dict) or not data["targets"]:
            raise ConfigError(f"targets file {path} needs a 'targets:' mapping of name -> settings")
        defaults = {k: v for k, v in data.items() if k not in ("targets", "history_url", "stage_dir")}
        if "storage" not in defaults:
            defaults["storage"] = default_storage_url(env)
        targets = {name: _target_from_yaml(str(name), raw, defaults, path) for name, raw in data["targets"].items()}
        return Settings(
            targets=targets,
            history_url=history_url or data.get("history_url"),
            stage_dir=Path(data["stage_dir"]) if data.get("stage_dir") else stage_dir,
            s3=s3,
            source=f"file {path}",
        )
    targets = {}
    dsn_env = next((var for var in DSN_ENV_VARS if env.get(var)), None)
    if dsn_env:
        name = check_target_name(env.get("BACKUP_TARGET", "prod"))
        targets[name] = Target(name=name, dsn_env=dsn_env, storage_url=default_storage_url(env))
    return Settings(targets=targets, history_url=history_url, stage_dir=stage_dir, s3=s3, source="environment")
