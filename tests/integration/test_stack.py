"""Local-stack behaviour that needs no Airflow: ports in use, idempotent start, down."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from granary.settings import Settings
from granary.stack import (
    LocalStack,
    StackError,
    ensure_credentials,
    ephemeral_ports,
    free_port_block,
)

pytestmark = pytest.mark.integration


def test_port_in_use_names_the_port_and_the_holder(tmp_path: Path) -> None:
    port = free_port_block(10, start=23000)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port + 2))  # the volume server's port
        holder.listen()
        stack = LocalStack(Settings(home=tmp_path, s3_port=port), echo=lambda _m: None)
        with pytest.raises(StackError) as exc:
            stack.start_s3()
    message = str(exc.value)
    assert f"port {port + 2} is already taken" in message and "pid" in message


def test_free_port_blocks_stay_out_of_the_ephemeral_range() -> None:
    # a port in the kernel's ephemeral range can become the local end of any outgoing
    # connection between the check and the server's bind
    ephemeral = ephemeral_ports()
    first = free_port_block(10, start=ephemeral.start - 12)
    assert first + 10 <= ephemeral.start or first >= ephemeral.stop, (first, ephemeral)


def test_a_component_that_dies_at_start_up_shows_its_log(tmp_path: Path) -> None:
    stack = LocalStack(Settings(home=tmp_path), echo=lambda _m: None)
    proc = stack._spawn("doomed", [sys.executable, "-c", "import sys; print('starting'); "
                                   "sys.exit('error: [Errno 98] address already in use')"],
                        {}, tmp_path)
    with pytest.raises(StackError) as exc:
        stack._wait("doomed", proc, lambda: False, timeout=60)
    message = str(exc.value)
    assert message.startswith("doomed exited during start-up; see ")
    assert "| starting" in message and "| error: [Errno 98] address already in use" in message


def test_credentials_are_generated_once_and_private(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path)
    assert ensure_credentials(tmp_path) == first
    assert (tmp_path / "s3-credentials.json").stat().st_mode & 0o777 == 0o600
    assert len(first["secret_key"]) >= 32


def test_s3_stack_starts_once_and_stops(tmp_path: Path) -> None:
    stack = LocalStack(Settings(home=tmp_path, s3_port=free_port_block(10, start=24000)),
                       echo=lambda _m: None)
    stack.start_s3()
    pid = stack.status()[0].pid
    stack.start_s3()  # already running: nothing new is started
    assert stack.status()[0].pid == pid and stack.status()[0].running
    assert stack.down(grace=10) == ["s3"]
    assert not stack.status()[0].running
    assert (tmp_path / "s3").is_dir()
