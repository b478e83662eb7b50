"""Property-based testing of the published OpenAPI schema against the running gateway.

Schemathesis generates requests from the schema (valid and invalid ones); the gateway must
never answer 5xx, and every response must match the schema, documented status codes included.
Its command line is used (not its pytest plugin, which lags behind pytest releases).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ApiClient
from tools.stack import Stack

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def test_the_gateway_honours_its_openapi_schema(
    stack: Stack, client_a: ApiClient, tmp_path: Path
) -> None:
    program = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert program, "schemathesis is a dev dependency"
    done = subprocess.run(
        [program, "run", f"{stack.url}/openapi.json", "--checks", CHECKS,
         "--max-examples", "30", "--header", f"X-API-Key: {client_a.key}",
         "--report-dir", str(tmp_path), "--no-color"],
        capture_output=True, text=True, timeout=480, check=False,
    )  # fmt: skip
    summary = done.stdout[-4000:]
    assert done.returncode == 0, summary
    assert "passed" in summary.lower()
