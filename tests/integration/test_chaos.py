"""The fault suite's invariants, short: broker SIGKILL, Redis restart, worker and gateway
SIGKILLs and hostile clients under load, on a stack with servers of its own
(`make chaos` runs every phase with more load)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ApiClient
from tools.chaos import QUICK, Chaos
from tools.stack import Stack

pytestmark = pytest.mark.integration


def test_no_fault_loses_doubles_strands_or_leaks_anything(
    isolated: Stack, isolated_client: ApiClient
) -> None:
    chaos = Chaos(isolated, isolated_client.key)
    for name in QUICK:
        chaos.run_phase(name, 10)
    report = chaos.report()
    print(report.render())
    assert report.accepted >= report.submitted - report.gave_up > 0
    assert report.problems() == [], report.render()
