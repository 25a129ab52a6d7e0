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

from .archive import check_codec
from .encryption import parse_recipients
from .errors import ConfigError
from .storage import S3Settings
from .targets_file import read_targets_file
from .vocabulary import BACKUP_TYPES

TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
DSN_ENV_VARS = ("DATABASE_URL", "PROD_SUPABASE_DB_URL")
DEFAULT_TARGETS_FILE = "backup_targets.yaml"
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_MIGRATIONS_TABLE = "supabase_migrations.schema_migrations"
MAX_DUMP_JOBS = 32  # dump_jobs: parallel pg_dump workers at most
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
    age_recipients: tuple[str, ...] = ()  # age public keys to encrypt for; () falls back to BACKUP_AGE_RECIPIENTS
    tripwire_drop_share: float = 0.5  # a table losing more than this share of its rows since the last backup…
    tripwire_min_rows: int = 1000  # …if it had at least this many, or disappearing, raises the tripwire
    tripwire_pin: bool = True  # …which then pins the previous backup until `keep` releases it
    object_lock_mode: str = "GOVERNANCE"  # S3 Object Lock mode where the bucket has it: GOVERNANCE or COMPLIANCE
    copies: tuple[str, ...] = ()  # storage URLs that receive a second copy of every backup (3-2-1)
    dump_jobs: int = 1  # > 1: pg_dump --format=directory --jobs=N in the same snapshot, stored as one tar

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


def _target_from_yaml(name: str, given: dict, defaults: dict, path: str) -> Target:
    """A Target from one validated `targets:` entry over the validated top-level defaults."""
    def where(key: str) -> str:
        return f"{path}: {f'targets.{name}.' if key in given else ''}{key}"

    try:
        check_target_name(name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: targets.{name}: {exc}") from None
    # An explicit null means "the default", except where null itself means "off".
    def kept(values: dict) -> dict:
        return {k: v for k, v in values.items() if v is not None or k in ("schedule", "migrations_table")}

    merged = {**kept(defaults), **kept(given)}
    if not merged.get("dsn_env"):
        raise ConfigError(f"{path}: targets.{name}.dsn_env: target {name!r} needs dsn_env "
                          "(the name of the environment variable holding its database URL)")
    try:
        codec = check_codec(merged.get("compression", "zstd"))
    except ConfigError as exc:
        raise ConfigError(f"{where('compression')}: {exc}") from None
    level = merged.get("compression_level", DEFAULT_LEVEL[codec])
    jobs = merged.get("dump_jobs", 1)
    if not 1 <= jobs <= MAX_DUMP_JOBS:
        raise ConfigError(f"{where('dump_jobs')}: dump_jobs {jobs} is out of range: use 1 (one pg_dump stream, "
                          f"the default) to {MAX_DUMP_JOBS} parallel pg_dump workers")
    low, high = LEVELS[codec]
    if not low <= level <= high:
        raise ConfigError(f"{where('compression_level')}: compression_level {level} is out of range for {codec} "
                          f"({low}-{high}): choose a level in that range")
    return Target(
        name=name,
        dsn_env=merged["dsn_env"],
        storage_url=check_storage_url(merged["storage"], f"{where('storage')}"),
        pg_bin_dir=merged.get("pg_bin_dir"),
        compression=codec,
        compression_level=level,
        retention_days=merged.get("retention_days", 30),
        schedule=merged.get("schedule", DEFAULT_SCHEDULE) or None,
        drill=merged.get("drill", True),
        drill_pg_major=merged.get("drill_pg_major"),
        assertions=tuple(_assertion_paths(merged.get("assertions", []), path, where("assertions"))),
        restore_destination=merged.get("restore_destination", False),
        protected=merged.get("protected", False),
        standby_dsn_env=merged.get("standby_dsn_env"),
        migrations_table=merged.get("migrations_table", DEFAULT_MIGRATIONS_TABLE) or None,
        keep_daily=merged.get("keep_daily"),
        keep_weekly=merged.get("keep_weekly"),
        keep_monthly=merged.get("keep_monthly"),
        delete_expired_objects=merged.get("delete_expired_objects", True),
        min_good_backups=merged.get("min_good_backups", 3),
        age_recipients=parse_recipients(merged.get("age_recipients"), where("age_recipients")),
        tripwire_drop_share=merged.get("tripwire_drop_share", 0.5),
        tripwire_min_rows=merged.get("tripwire_min_rows", 1000),
        tripwire_pin=merged.get("tripwire_pin", True),
        object_lock_mode=merged.get("object_lock_mode", "GOVERNANCE"),
        copies=tuple(check_storage_url(url, f"{where('copies')}[{i}]") for i, url in enumerate(merged.get("copies", []))),
        dump_jobs=jobs,
    )


def _assertion_paths(items: list[str], path: str, where: str) -> list[str]:
    """Assertion files, relative to the targets file; each must exist."""
    out = []
    for item in items:
        file = Path(item) if Path(item).is_absolute() else Path(path).resolve().parent / item
        if not file.is_file():
            raise ConfigError(f"{where}: assertion file {file} does not exist: fix the path (relative to {path})")
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
        top, given = read_targets_file(path)
        defaults = {k: v for k, v in top.items() if k not in ("history_url", "stage_dir")}
        if not defaults.get("storage"):
            defaults["storage"] = default_storage_url(env)
        targets = {name: _target_from_yaml(name, settings, defaults, path) for name, settings in given.items()}
        return Settings(
            targets=targets,
            history_url=history_url or top.get("history_url"),
            stage_dir=Path(top["stage_dir"]) if top.get("stage_dir") else stage_dir,
            s3=s3,
            source=f"file {path}",
        )
    targets = {}
    dsn_env = next((var for var in DSN_ENV_VARS if env.get(var)), None)
    if dsn_env:
        name = check_target_name(env.get("BACKUP_TARGET", "prod"))
        targets[name] = Target(name=name, dsn_env=dsn_env, storage_url=default_storage_url(env))
    return Settings(targets=targets, history_url=history_url, stage_dir=stage_dir, s3=s3, source="environment")
