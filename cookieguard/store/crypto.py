"""Authenticated encryption of stored values (Fernet: AES-128-CBC + HMAC-SHA256).

With several keys configured, values are encrypted with the first and decrypted with any, so a
key can be rotated without losing the results stored under the previous one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class Sealer:
    def __init__(self, keys: Sequence[str]) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    def seal(self, plain: bytes) -> bytes:
        return self._fernet.encrypt(plain) if self._fernet else plain

    def open(self, sealed: bytes) -> bytes | None:
        """The plain value, or None when it was not sealed with any of our keys (or tampered)."""
        if self._fernet is None:
            return sealed
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken:
            return None
