"""Key files: the 32-byte Ed25519 seed as one line of hex, mode 0600.

Files are written atomically (temporary file in the same directory created 0600, then
renamed), so a crash never leaves a half-written or briefly world-readable key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from fastpayd.errors import EXIT_CONFIG, FastpaydError
from protocol import KeyPair

log = logging.getLogger(__name__)


class KeyFileError(FastpaydError):
    """A key file is missing, unreadable or malformed; the message names it."""

    code = "KeyFileError"
    exit_status = EXIT_CONFIG


def write_key(path: Path, keypair: KeyPair, *, overwrite: bool = False) -> None:
    """Write ``keypair``'s seed to ``path`` (0600).

    Raises KeyFileError if the file exists (unless ``overwrite``) or its directory does
    not: a typo in the directory must not silently create a tree somewhere.
    """
    if not path.parent.is_dir():
        raise KeyFileError(f"{path}: directory {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: already exists (refusing to overwrite a key)")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may not be restrictive enough on O_CREAT
        os.write(fd, (keypair.seed.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_key(path: Path) -> KeyPair:
    """Return the key pair stored in ``path``; raises KeyFileError."""
    try:
        st = os.stat(path)
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read key: {exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: key file is accessible by group/others (mode %o); chmod 600",
                    path, stat.S_IMODE(st.st_mode))
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{path}: not a hex seed") from None
    if len(seed) != 32:
        raise KeyFileError(f"{path}: expected a 32-byte seed, got {len(seed)} bytes")
    return KeyPair.from_seed(seed)
