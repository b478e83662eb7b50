"""API keys: high-entropy random tokens, stored only as SHA-256 hashes.

A slow password hash is unnecessary for 256-bit random keys; a fast hash lets the gateway
look a key up by its hash in one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "fv_"


def generate_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_client_id() -> str:
    return "cl_" + secrets.token_hex(8)
