"""Local-stack behaviour that needs no Airflow: ports in use, idempotent start, down."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from granary.settings import Settings
from granary.stack import LocalStack, StackError, ensure_credentials, free_port_block

pytestmark = pytest.mark.integration


def test_port_in_use_names_the_port_and_the_holder(tmp_path: Path) -> None:
    port = free_port_block(10, start=51000)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port + 2))  # the volume server's port
        holder.listen()
        stack = LocalStack(Settings(home=tmp_path, s3_port=port), echo=lambda _m: None)
        with pytest.raises(StackError) as exc:
            stack.start_s3()
    message = str(exc.value)
    assert f"port {port + 2} is already taken" in message and "pid" in message


def test_credentials_are_generated_once_and_private(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path)
    assert ensure_credentials(tmp_path) == first
    assert (tmp_path / "s3-credentials.json").stat().st_mode & 0o777 == 0o600
    assert len(first["secret_key"]) >= 32


def test_s3_stack_starts_once_and_stops(tmp_path: Path) -> None:
    stack = LocalStack(Settings(home=tmp_path, s3_port=free_port_block(10, start=52000)),
                       echo=lambda _m: None)
    stack.start_s3()
    pid = stack.status()[0].pid
    stack.start_s3()  # already running: nothing new is started
    assert stack.status()[0].pid == pid and stack.status()[0].running
    assert stack.down(grace=10) == ["s3"]
    assert not stack.status()[0].running
    assert (tmp_path / "s3").is_dir()
