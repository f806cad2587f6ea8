"""Ed25519 signing keys for checkpoints, as PEM files.

Guarantees: :func:`write_key_pair` creates the private key file with mode
0600 and never overwrites an existing file (a lost signing key cannot be
replaced, so a typo must not destroy one); the public key goes beside it with
``.pub`` appended. Keys are standard PKCS#8 / SubjectPublicKeyInfo PEM, so
``openssl genpkey -algorithm ed25519`` makes keys codetape reads, and
``openssl pkey -pubout`` gives the public half. A file of the wrong kind is a
:class:`KeyFileError` naming it, never a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder.errors import CodetapeError

__all__ = [
    "KeyFileError",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_bytes",
    "verifier_key",
    "write_key_pair",
]

# The signed-note signature type byte for Ed25519 (c2sp.org/signed-note).
ED25519_TYPE = b"\x01"


class KeyFileError(CodetapeError):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""


def public_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32-byte RFC 8032 encoding of ``key``."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, key: Ed25519PublicKey) -> bytes:
    """The signed-note key ID: the first 4 bytes of SHA-256(name, LF, 0x01, public key)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_bytes(key)).digest()[:4]


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """The key in the signed-note verifier form (``name+hexid+base64``) that Go's
    ``golang.org/x/mod/sumdb/note`` and transparency-dev tools read."""
    encoded = base64.b64encode(ED25519_TYPE + public_bytes(key)).decode()
    return f"{name}+{key_id(name, key).hex()}+{encoded}"


def write_key_pair(path: Path) -> tuple[Path, Path]:
    """Create a new key pair at ``path`` (private, 0600) and ``path.pub``; return both paths."""
    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for target in (path, public_path):
        if target.exists():
            raise KeyFileError(f"{target} already exists: not overwriting a key")
    try:
        # O_EXCL: a file that appeared since the check above is not overwritten either.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(private_pem)
            out.flush()
            os.fsync(out.fileno())
        with open(public_path, "xb") as out:
            out.write(public_pem)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write the key pair at {path}: {exc.strerror}") from None
    return path, public_path


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path} is encrypted: give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = " (it is a public key)" if b"PUBLIC KEY" in data else ""
        raise KeyFileError(f"{path} is not a PEM private key{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path)
    if b"PRIVATE KEY" in data:
        # Refused rather than derived: verifying with the signer's own key file
        # means the verifier holds the secret, which a checkpoint must not need.
        raise KeyFileError(f"{path} is a private key: give the public key (the .pub file)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key
