"""Running an administrator's command (auto_shutdown_command,
orphan_action_command): without a shell, with a time limit, its output kept.

The master must not wait on it: the command runs as an asyncio subprocess,
and what it did (exit status, output, time-out) comes back as data for the
event that records it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

MAX_OUTPUT = 16 * 1024
"""Bytes of a command's output kept for its event."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: list[str]
    returncode: int | None
    """None when it could not be started or was killed at its time limit."""
    output: str
    timed_out: bool = False
    error: str | None = None
    """Why it could not be started."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def details(self) -> dict[str, object]:
        """What the event recording the command's run carries."""
        return {
            "command": self.command,
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "error": self.error,
            "output": self.output,
        }

    def summary(self) -> str:
        if self.error is not None:
            return f"could not be started: {self.error}"
        if self.timed_out:
            return "was killed at its time limit"
        return f"exited with status {self.returncode}"


async def run_bounded(
    command: list[str], extra_env: dict[str, str], time_limit: float
) -> CommandResult:
    env = {**os.environ, **extra_env}
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as error:
        return CommandResult(command, None, "", error=str(error))
    assert process.stdout is not None
    output = bytearray()

    async def collect() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            output.extend(chunk)
            del output[:-MAX_OUTPUT]

    try:
        await asyncio.wait_for(asyncio.gather(collect(), process.wait()), time_limit)
    except TimeoutError:
        # Its own session: the command's children go with it.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()
        return CommandResult(command, None, _text(bytes(output)), timed_out=True)
    return CommandResult(command, process.returncode, _text(bytes(output)))


def _text(output: bytes | None) -> str:
    return (output or b"")[-MAX_OUTPUT:].decode("utf-8", "replace")
