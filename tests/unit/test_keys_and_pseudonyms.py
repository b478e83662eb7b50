"""API keys and pseudonyms: unguessable keys stored as hashes; stable, keyed, separated hashes."""

from __future__ import annotations

from shared.apikeys import generate_key, hash_key
from shared.pseudonym import pseudonymise


def test_keys_are_long_random_and_stored_only_as_a_hash() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    key = keys.pop()
    assert len(key) >= 40
    digest = hash_key(key)
    assert len(digest) == 64
    assert key not in digest
    assert hash_key(key) == digest


def test_pseudonyms_are_stable_keyed_and_separated_by_purpose() -> None:
    a = pseudonymise("secret", "document", "12345678")
    assert a == pseudonymise("secret", "document", "12345678")
    assert a != pseudonymise("other-secret", "document", "12345678")
    assert a != pseudonymise("secret", "user", "12345678")
    assert "12345678" not in a
