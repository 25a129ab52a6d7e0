"""Encryption at rest with age: stored archives and roles files readable only with a secret key.

The archive is encrypted after compression, as it streams from pg_dump to the
stage file, in the standard age format (x25519 recipients), so the stock
`age -d -i key.txt` tool opens it. Design decision: the manifest stays
plaintext and its sha256 is of the stored (encrypted) bytes, so `verify` and
retention work on a host without any key; only drills and restores need
BACKUP_AGE_IDENTITY_FILE, and they check that one of its keys matches the
manifest's recipients before downloading anything. Secret keys are read from
that file only, never from argv or settings, and never appear in messages.
"""

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, BinaryIO

import pyrage

from .errors import ConfigError, IdentityMissing, VerifyError

RECIPIENTS_ENV = "BACKUP_AGE_RECIPIENTS"
IDENTITY_ENV = "BACKUP_AGE_IDENTITY_FILE"
SCHEME = "age"
AGE_FORMAT = "age-encryption.org/v1"
NO_IDENTITY_REASON = (
    f"no {IDENTITY_ENV} on this host: checksum verified; the weekly drill runs where the identity is"
)
_SECRET_KEY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+")


def parse_recipients(value: object, setting: str = RECIPIENTS_ENV) -> tuple[str, ...]:
    """age public keys from a string (commas or whitespace between them) or a list; ConfigError if one is not a key."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [part for v in value for part in v.replace(",", " ").split()]
    else:
        raise ConfigError(f"{setting} must be age public keys (age1…), as a list or separated by commas or spaces")
    out = []
    for number, item in enumerate(items, 1):
        if _SECRET_KEY.search(item.upper()):
            raise ConfigError(f"{setting} holds a secret key (AGE-SECRET-KEY-…): put only public keys (age1…) "
                              f"there and the secret key in the file {IDENTITY_ENV} names, on the drill host")
        try:
            pyrage.x25519.Recipient.from_str(item)
        except pyrage.RecipientError:
            # The value is not echoed: whatever was pasted there may be a secret.
            raise ConfigError(f"{setting}: entry {number} is not an age public key: use the age1… line "
                              "age-keygen prints (age-keygen -y key.txt)") from None
        if item not in out:
            out.append(item)
    return tuple(out)


def env_recipients(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    return parse_recipients((os.environ if env is None else env).get(RECIPIENTS_ENV))


def recipients_for(target: object, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The target's own age_recipients, else BACKUP_AGE_RECIPIENTS; () stores backups unencrypted."""
    return tuple(getattr(target, "age_recipients", ()) or ()) or env_recipients(env)


def manifest_entry(recipients: Sequence[str]) -> dict | None:
    """What the manifest says about encryption: public keys only."""
    if not recipients:
        return None
    return {"scheme": SCHEME, "format": AGE_FORMAT, "recipients": list(recipients),
            "objects": ["archive", "globals"], "order": "compressed, then encrypted"}


def is_encrypted(manifest: dict) -> bool:
    return bool(manifest.get("encryption"))


def has_identity(env: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get(IDENTITY_ENV))


def identities_for(manifest: dict, env: Mapping[str, str] | None = None) -> list:
    """The keys of BACKUP_AGE_IDENTITY_FILE that open this backup; IdentityMissing naming the variable and the backup."""
    backup = f"backup {manifest.get('backup_id')} of target {manifest.get('target')!r}"
    wanted = list((manifest.get("encryption") or {}).get("recipients") or [])
    path = (os.environ if env is None else env).get(IDENTITY_ENV)
    if not path:
        raise IdentityMissing(f"{backup} is encrypted with age but {IDENTITY_ENV} is not set: point it at a file "
                              f"holding the secret key of one of its recipients ({_short(wanted)})")
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityMissing(f"{backup} is encrypted with age but {IDENTITY_ENV} file {path} cannot be read "
                              f"({getattr(exc, 'strerror', None) or type(exc).__name__}): fix the path or its permissions") from None
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("AGE-SECRET-KEY-"):
            continue  # comments (# public key: …), blank lines, plugin identities
        try:
            keys.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise IdentityMissing(f"{IDENTITY_ENV} file {path} holds a malformed age secret key: "
                                  "regenerate it with age-keygen") from None
    matching = [k for k in keys if str(k.to_public()) in wanted]
    if not matching:
        raise IdentityMissing(f"none of the {len(keys)} key(s) in {IDENTITY_ENV} file {path} opens {backup}: "
                              f"it was encrypted for {_short(wanted)}; add the matching secret key to that file")
    return matching


def _short(recipients: Sequence[str]) -> str:
    return ", ".join(f"{r[:12]}…{r[-6:]}" for r in recipients) or "no recipients"


class _Remembering:
    """Wraps a file so the OSError behind a failed pyrage call (disk full…) reaches the caller intact."""

    def __init__(self, raw, what: str):
        self.raw, self.what, self.error = raw, what, None

    def read(self, n: int = -1) -> bytes:
        try:
            return self.raw.read(n)
        except BaseException as exc:
            self.error = exc
            raise

    def write(self, data: bytes) -> int:
        try:
            return self.raw.write(data)
        except BaseException as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.raw.flush()
        except BaseException as exc:
            self.error = exc
            raise

    def readable(self) -> bool:
        return self.what == "read"

    def writable(self) -> bool:
        return self.what == "write"


def encrypt_stream(src: BinaryIO, dst: IO[bytes], recipients: Sequence[str]) -> None:
    """Stream src into dst as an age file for recipients (bounded memory: age works in 64 KiB chunks)."""
    reader, writer = _Remembering(src, "read"), _Remembering(dst, "write")
    try:
        pyrage.encrypt_io(reader, writer, [pyrage.x25519.Recipient.from_str(r) for r in recipients])
    except pyrage.EncryptError:
        if reader.error is not None or writer.error is not None:
            raise (reader.error or writer.error) from None
        raise


def encrypt_bytes(data: bytes, recipients: Sequence[str]) -> bytes:
    return pyrage.encrypt(data, [pyrage.x25519.Recipient.from_str(r) for r in recipients])


def decrypt_stream(src: BinaryIO, dst: IO[bytes], identities: list, where: str) -> None:
    """Stream an age file into dst; VerifyError if it does not decrypt (the stored object is damaged)."""
    reader, writer = _Remembering(src, "read"), _Remembering(dst, "write")
    try:
        pyrage.decrypt_io(reader, writer, identities)
    except (pyrage.DecryptError, OSError) as exc:
        if reader.error is not None or writer.error is not None:
            raise (reader.error or writer.error) from None
        raise VerifyError(f"{where} does not decrypt with age ({_one_line(exc)}): it is damaged; "
                          "do not restore it, take a new backup") from None


def decrypt_bytes(data: bytes, identities: list, where: str) -> bytes:
    try:
        return pyrage.decrypt(data, identities)
    except pyrage.DecryptError as exc:
        raise VerifyError(f"{where} does not decrypt with age ({_one_line(exc)}): it is damaged; "
                          "do not restore it, take a new backup") from None


def _one_line(exc: BaseException) -> str:
    return _SECRET_KEY.sub("AGE-SECRET-KEY-***", " ".join(str(exc).split()))[:300]
