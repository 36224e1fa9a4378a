"""The terminal end of `poolwarden debug connect`: pdb over a worker's debug socket.

```
  you ── terminal ──▶ connect() ──Unix socket──▶ worker's SocketPdb
                        │  output printed as it comes; at "(Pdb) " one line is read
                        └─ Ctrl-C: SIGINT to the worker (pdb breaks in there)
```

The server speaks pdb's plain text, so this client only has to know where
a prompt ends and which keys mean what: Ctrl-C interrupts the *worker* (as
it would a local pdb), Ctrl-D detaches and leaves the worker running. With a
terminal, lines are read with `input()`, so readline editing and history
work; without one (a script, a test), lines come from stdin one per prompt.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
from typing import TextIO

from poolwarden.signals import interruptible
from poolwarden.unix_paths import reachable
from poolwarden.worker.debugger import CONFIRM_CLEAR, PROMPT, peer_credentials

PROMPTS = (PROMPT, "(com) ", CONFIRM_CLEAR)
"""pdb's prompt, its prompt while defining a breakpoint's `commands`, and
the one question it asks (`clear` with no argument)."""

ENDED = "the debug session ended"


def connect(
    path: str,
    *,
    pid: int | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run a debug session on the socket at `path`; return the exit status.

    `pid` is the worker to interrupt on Ctrl-C; by default the process at the
    other end of the socket (SO_PEERCRED). The status is 0 when the session
    ends (the server closed it, or we detached), 1 when the socket cannot be
    reached.
    """
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    interruptible()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with reachable(path) as address:
            sock.connect(address)
    except OSError as error:
        print(
            f"cannot connect to the debugger at {path}: {error.strerror or error}", file=sys.stderr
        )
        return 1
    with sock:
        if pid is None:
            pid, _, _ = peer_credentials(sock)
        session = _Session(sock, pid, stdin, stdout)
        session.run()
    return 0


class _Session:
    def __init__(self, sock: socket.socket, pid: int, stdin: TextIO, stdout: TextIO) -> None:
        self.sock = sock
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.interactive = stdin is sys.stdin and stdin.isatty()
        self.detaching = False
        self.pending = ""
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass

    def run(self) -> None:
        while True:
            try:
                if not self._exchange():
                    break
            except KeyboardInterrupt:
                # Ctrl-C while the worker runs: it breaks into pdb and prompts.
                self.interrupt()
        if self.pending and not self.pending.endswith("\n"):
            self.pending += "\n"
        self.stdout.write(self.pending + ENDED + "\n")
        self.stdout.flush()

    def _exchange(self) -> bool:
        """Print what the server sent; answer a prompt. False once the server closed."""
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return False
        self.pending += data.decode("utf-8", errors="replace")
        prompt = next((p for p in PROMPTS if self.pending.endswith(p)), None)
        if prompt is None or self._more_output_waiting():
            self.stdout.write(self.pending)
            self.stdout.flush()
            self.pending = ""
            return True
        self.stdout.write(self.pending[: -len(prompt)])
        self.pending = ""
        line = self.read_line(prompt)
        if line is not None:
            self.send(line + "\n")
        return True

    def _more_output_waiting(self) -> bool:
        """Whether the prompt-looking text is followed by more output already sent."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def read_line(self, prompt: str) -> str | None:
        """The user's next command; None if Ctrl-C (the worker prints a new prompt)."""
        if self.detaching:
            return "detach"
        if self.interactive:
            try:
                return input(prompt)
            except KeyboardInterrupt:
                self.stdout.write("\n")
                self.interrupt()
                return None
            except EOFError:
                self.stdout.write("\n")
                self.detaching = True
                return "detach"
        self.stdout.write(prompt)
        line = self.stdin.readline()
        if not line:
            self.stdout.write("\n")
            self.detaching = True
            return "detach"
        line = line.rstrip("\r\n")
        self.stdout.write(line + "\n")
        self.stdout.flush()
        return line

    def send(self, text: str) -> None:
        try:
            self.sock.sendall(text.encode("utf-8"))
        except OSError:
            pass

    def interrupt(self) -> None:
        """Ctrl-C: interrupt the worker, which breaks into pdb (or cancels the line)."""
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
