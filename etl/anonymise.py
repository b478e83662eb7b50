"""Re-keying the end-user identifiers for export.

The operational documents already hold keyed hashes of the user and document ids. The
export re-keys them with a second secret, so an analysts' file cannot be joined back to the
operational database (or to a raw id) without it, while the same user still joins across
runs. Every column not in the analysts' list is dropped by extraction itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.pseudonym import pseudonymise

#: Columns that identify an end user: never exported as stored.
IDENTIFIER_COLUMNS: tuple[str, ...] = ("user_name", "documento")
#: 128 bits: no collisions at any realistic volume, half the bytes of a full digest.
PSEUDONYM_HEX_CHARS = 32


def rekey(secret: str, column: str, value: object) -> str | None:
    if value is None:
        return None
    return pseudonymise(secret, f"etl:{column}", str(value))[:PSEUDONYM_HEX_CHARS]


def anonymise_row(row: Mapping[str, Any], secret: str) -> dict[str, Any]:
    out = dict(row)
    for column in IDENTIFIER_COLUMNS:
        out[column] = rekey(secret, column, row.get(column))
    return out
