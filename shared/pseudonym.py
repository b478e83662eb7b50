"""Keyed hashing of end-user identifiers: stable across runs (joins work), not reversible."""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise(secret: str, purpose: str, value: str) -> str:
    """HMAC-SHA256 of `value`, domain-separated by `purpose` so fields cannot be cross-matched."""
    message = f"{purpose}\x00{value}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
