"""Ed25519 key pairs, ``did:key`` identifiers, and sealing of private keys at rest.

* ``did:key`` follows the W3C CCG method: ``did:key:z`` + base58btc(0xed 0x01 + 32-byte
  public key), so a signature can be verified from the DID alone.
* Private keys never leave the kernel in clear: they are sealed with the installation's
  master key (XSalsa20-Poly1305, PyNaCl ``SecretBox``) before they are stored.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import base58
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from underlay import errors

_ED25519_MULTICODEC = b"\xed\x01"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise errors.InvalidInput(f"{field} is not valid base64", field=field) from exc


def did_from_public_key(public_key: bytes) -> str:
    return "did:key:z" + base58.b58encode(_ED25519_MULTICODEC + public_key).decode()


def public_key_from_did(did: str) -> bytes:
    if not did.startswith("did:key:z"):
        raise errors.InvalidInput("only did:key identifiers are supported", field="did")
    try:
        raw = base58.b58decode(did[len("did:key:z") :])
    except ValueError as exc:
        raise errors.InvalidInput("did:key is not valid base58btc", field="did") from exc
    if raw[:2] != _ED25519_MULTICODEC or len(raw) != 34:
        raise errors.InvalidInput("did:key is not an Ed25519 key", field="did")
    return raw[2:]


class KeyPair:
    def __init__(self, signing_key: SigningKey) -> None:
        self._sk = signing_key

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(SigningKey.generate())

    @property
    def public_key(self) -> bytes:
        return bytes(self._sk.verify_key)

    @property
    def did(self) -> str:
        return did_from_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message).signature

    def seed(self) -> bytes:
        return bytes(self._sk)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
        return True
    except (BadSignatureError, ValueError, CryptoError):
        return False


class Sealer:
    """Seals secrets with the installation master key (32 bytes)."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != SecretBox.KEY_SIZE:
            raise errors.InvalidInput("master key must be 32 bytes", field="master_key")
        self._box = SecretBox(master_key)

    def seal(self, plaintext: bytes) -> str:
        return b64(bytes(self._box.encrypt(plaintext)))

    def open(self, sealed: str) -> bytes:
        try:
            return self._box.decrypt(base64.b64decode(sealed))
        except CryptoError as exc:
            raise errors.InternalError(
                "a sealed key could not be opened (wrong master key?)"
            ) from exc

    def keypair(self, sealed: str) -> KeyPair:
        return KeyPair(SigningKey(self.open(sealed)))


def load_master_key(home: Path, override_b64: str | None = None) -> bytes:
    """The master key: from config/env if given, else ``home/master.key`` (created 0600)."""
    if override_b64:
        return unb64(override_b64, "master_key")
    path = home / "master.key"
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(SecretBox.KEY_SIZE)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic: the first process to start wins, others read its key
    except FileExistsError:
        key = path.read_bytes()
    finally:
        tmp.unlink()
    return key
