"""Checking a restored database against its manifest, and running assertion SQL.

The manifest's row counts and inventory were taken in the dump's own snapshot,
so any difference in row counts or objects is a real defect, not a race.
Sequences are the exception: their values are not transactional and pg_dump
reads them a moment after the manifest does, so a restored sequence may be
ahead of the manifest but never behind it.

Assertion files: statements end with a semicolon at the end of a line; each
must return rows with a boolean column `ok`, and passes when it returns at
least one row and every `ok` is true. A `-- name: …` comment line names the
statement that follows it.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .dump import count_rows
from .inventory import QUERIES, sequence_values

_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?$", re.MULTILINE)
_NAME = re.compile(r"^\s*--\s*name:\s*(.+?)\s*$", re.MULTILINE)


@dataclass
class Comparison:
    row_count_mismatches: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unexpected: dict[str, list[str]] = field(default_factory=dict)
    sequences_behind: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    large_objects: tuple[int, int] | None = None
    missing_extensions: list[str] = field(default_factory=list)

    @property
    def row_counts_match(self) -> bool:
        return not self.row_count_mismatches

    @property
    def objects_match(self) -> bool:
        return not (self.missing or self.unexpected or self.sequences_behind or self.large_objects
                    or self.missing_extensions)

    @property
    def ok(self) -> bool:
        return self.row_counts_match and self.objects_match

    def reasons(self) -> list[str]:
        out = [f"{t}: {e} rows in the backup, {a} restored" for t, (e, a) in self.row_count_mismatches.items()]
        out += [f"missing {kind}: {', '.join(names[:10])}" for kind, names in self.missing.items()]
        out += [f"unexpected {kind}: {', '.join(names[:10])}" for kind, names in self.unexpected.items()]
        out += [f"sequence {s} restored at {a}, behind the backup's {e}" for s, (e, a) in self.sequences_behind.items()]
        if self.large_objects:
            out.append(f"large objects: {self.large_objects[0]} in the backup, {self.large_objects[1]} restored")
        if self.missing_extensions:
            out.append(f"extensions not restored: {', '.join(self.missing_extensions)}")
        return out

    def to_dict(self) -> dict:
        return {
            "row_count_mismatches": {t: list(v) for t, v in self.row_count_mismatches.items()},
            "missing": self.missing,
            "unexpected": self.unexpected,
            "sequences_behind": {s: list(v) for s, v in self.sequences_behind.items()},
            "large_objects": list(self.large_objects) if self.large_objects else None,
            "missing_extensions": self.missing_extensions,
        }


def compare_with_manifest(pg: psycopg.Connection, manifest: dict, skipped_extensions: set[str] = frozenset()) -> Comparison:
    """Compare the database behind `pg` with what the manifest recorded at dump time."""
    pg.execute("SET row_security = off")
    result = Comparison()
    counts, _ = count_rows(pg)
    expected_counts: dict[str, int] = manifest.get("row_counts", {})
    for table in sorted(set(expected_counts) | set(counts)):
        if expected_counts.get(table) != counts.get(table):
            result.row_count_mismatches[table] = (expected_counts.get(table), counts.get(table))

    inventory = manifest.get("inventory") or {}
    for kind, query in QUERIES.items():
        if kind not in inventory:
            continue
        expected, actual = set(inventory[kind]), {r[0] for r in pg.execute(query).fetchall()}
        if missing := sorted(expected - actual):
            result.missing[kind] = missing
        if unexpected := sorted(actual - expected):
            result.unexpected[kind] = unexpected
    restored_sequences = sequence_values(pg)
    for name, value in (inventory.get("sequence_values") or {}).items():
        restored = restored_sequences.get(name)
        if name in restored_sequences and value is not None and (restored is None or restored < value):
            result.sequences_behind[name] = (value, restored)
    if "large_objects" in inventory:
        actual_los = pg.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
        if actual_los != inventory["large_objects"]:
            result.large_objects = (inventory["large_objects"], actual_los)
    present = {r[0] for r in pg.execute("SELECT extname FROM pg_extension").fetchall()}
    result.missing_extensions = sorted(set(inventory.get("extensions", {})) - present - set(skipped_extensions))
    pg.rollback()
    return result


@dataclass
class AssertionResult:
    file: str
    name: str
    ok: bool
    detail: str = ""


def split_statements(text: str) -> list[tuple[str, str]]:
    """(name, sql) pairs of an assertion file."""
    out = []
    start = 0
    for match in _STATEMENT_END.finditer(text):
        chunk = text[start:match.start()]
        start = match.end()
        body = "\n".join(line for line in chunk.splitlines() if line.strip() and not line.strip().startswith("--"))
        if not body.strip():
            continue
        named = _NAME.findall(chunk)
        out.append((named[-1] if named else " ".join(body.split())[:80], body))
    return out


def run_assertions(pg: psycopg.Connection, files: list[Path]) -> list[AssertionResult]:
    results = []
    for path in files:
        for name, statement in split_statements(Path(path).read_text()):
            try:
                with pg.transaction(force_rollback=True):
                    cur = pg.execute(statement)
                    columns = [c.name for c in cur.description or []]
                    if "ok" not in columns:
                        results.append(AssertionResult(str(path), name, False, "returns no column named ok"))
                        continue
                    oks = [row[columns.index("ok")] for row in cur.fetchall()]
            except psycopg.Error as exc:
                results.append(AssertionResult(str(path), name, False, f"error: {str(exc).strip().splitlines()[0]}"))
                continue
            if not oks:
                results.append(AssertionResult(str(path), name, False, "returned no rows"))
            elif not all(ok is True for ok in oks):
                results.append(AssertionResult(str(path), name, False, f"{sum(ok is not True for ok in oks)} of {len(oks)} rows not ok"))
            else:
                results.append(AssertionResult(str(path), name, True))
    return results
