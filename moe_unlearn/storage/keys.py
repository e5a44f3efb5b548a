"""The key of the registry's keyed hashes (HMAC-SHA256), kept out of the database: whoever holds a copy of
the key can test a guessed text against the hashes of forgotten records, so a copy of registry.db alone
must not hold it. README "What the run directory keeps of a forgotten record" gives the threat model."""

import hashlib
import os
import secrets
from contextlib import nullcontext
from pathlib import Path

from moe_unlearn.errors import UserError

KEY_FILE = "hmac.key"  # beside registry.db
KEY_ENV = "MOE_UNLEARN_HMAC_KEY_FILE"  # or a file the operator keeps elsewhere


def load_key(registry) -> bytes:
    """The key of the keyed hashes, kept out of the database (whoever holds a copy of it could test a
    guessed text against the hashes of forgotten records): the file `$MOE_UNLEARN_HMAC_KEY_FILE` names
    (the operator's, kept elsewhere), else KEY_FILE beside the database, readable by its owner only.
    The database keeps the key's sha256 to refuse a missing or wrong key; a key still in the database
    (run directories made before) is moved out on first open."""
    path = Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else registry.path.parent / KEY_FILE
    fingerprint, inside = registry.get_meta("hmac_key_sha256"), registry.get_meta("hmac_key")
    if not path.is_file():
        if os.environ.get(KEY_ENV):
            raise UserError(f"{KEY_ENV} names {path}, which is not a file")
        if fingerprint is not None:
            raise UserError(f"the key of this run directory's hashes is missing: restore {path} (or set {KEY_ENV})")
        _write_key(path, inside or secrets.token_hex(32))
    if path.stat().st_mode & 0o077:
        raise UserError(f"key file {path} is readable by others: chmod 600 {path}")
    key = path.read_text().strip()
    digest = hashlib.sha256(key.encode()).hexdigest()
    if (fingerprint or digest) != digest or (inside or key) != key:
        raise UserError(f"key file {path} does not hold this run directory's key")
    if fingerprint is None or inside is not None:
        with nullcontext() if registry.db.in_transaction else registry.transaction():
            registry.set_meta("hmac_key_sha256", digest)
            registry.db.execute("DELETE FROM meta WHERE key = 'hmac_key'")  # secure_delete: overwritten
    return bytes.fromhex(key)


def _write_key(path: Path, key_hex: str) -> None:
    """Create the key file (mode 600), whole or not at all, unless another process just did."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_hex + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and refuses to replace a key another process wrote first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
