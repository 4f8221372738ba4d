"""An interactive session on a server's serial console: stdin typed on it, what it prints on stdout.

On a terminal, stdin is put in raw mode (every key goes to the server,
Ctrl-C too) and Ctrl-] leaves, as with ``virsh console``. Otherwise stdin
is read until its end. The session ends when the user leaves, when stdin
ends (unless ``linger`` is given), after ``linger`` seconds, or when the
server side closes the console.
"""

from __future__ import annotations

import os
import sys
import termios
import threading
import time
import tty
from typing import BinaryIO

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

ESCAPE = b"\x1d"  # Ctrl-]
READ_SIZE = 4096


def run(console: ClientConnection, *, linger: float | None = None, stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None) -> str:
    """Carry the session until it ends; why it ended ("left", "input ended", "time up", "closed")."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    ended = threading.Event()
    why: list[str] = []

    def end(reason: str) -> None:
        if not ended.is_set():
            why.append(reason)
            ended.set()

    def printed() -> None:
        try:
            for message in console:
                stdout.write(message if isinstance(message, bytes) else message.encode())
                stdout.flush()
        except ConnectionClosed:
            pass
        end("closed")

    def typed(interactive: bool) -> None:
        while not ended.is_set():
            data = os.read(stdin.fileno(), READ_SIZE) if interactive else stdin.read1(READ_SIZE)
            if not data:
                if linger is None:
                    end("input ended")
                return
            if interactive and ESCAPE in data:
                data = data[:data.index(ESCAPE)]
                if data:
                    console.send(data)
                end("left")
                return
            try:
                console.send(data)
            except ConnectionClosed:
                end("closed")
                return

    interactive = stdin.isatty()
    saved = termios.tcgetattr(stdin.fileno()) if interactive else None
    try:
        if interactive:
            tty.setraw(stdin.fileno())
        threading.Thread(target=printed, name="console-output", daemon=True).start()
        threading.Thread(target=typed, args=(interactive,), name="console-input", daemon=True).start()
        started = time.monotonic()
        while not ended.wait(0.1):
            if linger is not None and time.monotonic() - started >= linger:
                end("time up")
    finally:
        if saved is not None:
            termios.tcsetattr(stdin.fileno(), termios.TCSADRAIN, saved)
        console.close()
    return why[0]
