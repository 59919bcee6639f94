"""`sluice up` listens on this machine only unless told otherwise, and says so when told."""

from __future__ import annotations

import pytest

from infra.cli import _loopback, _parser
from infra.local.stack import StackConfig


def test_the_local_stack_listens_on_loopback_by_default() -> None:
    assert StackConfig().host == "127.0.0.1"
    assert _parser().parse_args(["up"]).host is None  # None: the stack's default
    assert _parser().parse_args(["up", "--host", "0.0.0.0"]).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("sluice.example", False),  # a name that is not localhost: assume the network
    ],
)
def test_any_address_but_loopback_counts_as_the_network(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback
