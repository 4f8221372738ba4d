"""Serial consoles over WebSocket, for both apps: refusing a handshake with an error, and relaying bytes.

A console WebSocket carries binary messages: from the server, what the
console printed; from the client, what is typed. Text messages from the
client are typed as their UTF-8 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from dpustack.errors import DpustackError

DENIAL_EXTENSION = "websocket.http.response"
Output = Callable[[bytes], None]


async def deny(websocket: WebSocket, error: DpustackError) -> None:
    """Refuse the handshake with the error's HTTP status and JSON body (where the server cannot send an
    HTTP answer to a handshake, a close with code 1008 and the message)."""
    if DENIAL_EXTENSION in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(error.to_dict(), status_code=error.status))
    else:
        await websocket.close(code=1008, reason=error.message[:120])


def bearer_token(websocket: WebSocket) -> str:
    """The token of the handshake's ``Authorization: Bearer`` header ('' if it has none)."""
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def typed_input(websocket: WebSocket, write: Callable[[bytes], Awaitable[None]]) -> None:
    """Pass every message the client sends to ``write`` until it goes away."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await write(data)
    except WebSocketDisconnect:
        return


async def serve_subscription(websocket: WebSocket, subscribe: Callable[[Output], Callable[[], None]],
                             write: Callable[[bytes], None]) -> None:
    """Subscribe to a console (its DpustackError refuses the handshake), accept, then send the client what
    the subscription delivers (from any thread) and type what it sends with ``write``, until it goes away."""
    sender, receiver = anyio.create_memory_object_stream[bytes](math.inf)
    loop = asyncio.get_running_loop()

    def deliver(data: bytes) -> None:
        loop.call_soon_threadsafe(sender.send_nowait, data)

    async def output() -> None:
        async for data in receiver:
            await websocket.send_bytes(data)

    try:
        unsubscribe = subscribe(deliver)
    except DpustackError as exc:
        await deny(websocket, exc)
        return
    try:
        await websocket.accept()
        await first_done(output, lambda: typed_input(websocket, lambda data: anyio.to_thread.run_sync(write, data)))
    finally:
        unsubscribe()


async def first_done(*work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` together until one ends (a client or server that went away counts as an end); cancel
    the others."""
    async with anyio.create_task_group() as group:
        async def run(item: Callable[[], Awaitable[None]]) -> None:
            try:
                await item()
            except (WebSocketDisconnect, ConnectionError):
                pass
            group.cancel_scope.cancel()

        for item in work:
            group.start_soon(run, item)


async def relay_upstream(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Carry an accepted client ``websocket`` and a console WebSocket the server opened ``upstream`` into each
    other, both ways, until either side goes away; then close both."""
    async def down() -> None:
        try:
            async for message in upstream:
                await websocket.send_bytes(message if isinstance(message, bytes) else message.encode())
        except ConnectionClosed:
            pass

    async def up() -> None:
        try:
            await typed_input(websocket, upstream.send)
        except ConnectionClosed:
            pass

    try:
        await first_done(down, up)
    finally:
        await upstream.close()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # already closed by the client
            await websocket.close()
