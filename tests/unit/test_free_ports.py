"""Ports for the servers a stack starts (tools.stack.free_port)."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from tools.stack import _ephemeral_low, free_port


def test_free_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    """Below the range the kernel takes outgoing connections' local ports from, so no
    connection can take a port between free_port and the server binding it."""
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < _ephemeral_low() for port in ports)
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", ports[-1]))
        sock.listen()


def test_a_port_in_use_or_already_handed_out_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import stack

    handed_out = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        in_use = busy.getsockname()[1]
        spare = free_port()
        stack._HANDED_OUT.discard(spare)
        picks = iter([in_use, handed_out, spare])
        monkeypatch.setattr(stack, "_rng", SimpleNamespace(randrange=lambda *_: next(picks)))
        assert free_port() == spare
