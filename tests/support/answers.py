"""Servers on 127.0.0.1 for the executors' tests: the reference agent, and answers too
large to read (streamed, so that the tests themselves stay small in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from coordinator.agent import Agent
from coordinator.core import webhook as protocol


@asynccontextmanager
async def serving(
    app: Agent | web.Application, ssl_context: Any = None
) -> AsyncIterator[str]:  # the base URL
    runner = web.AppRunner(app.app() if isinstance(app, Agent) else app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


CHUNK = b"x" * 65536
HUGE = 1024
"""Chunks a streaming answer sends at most (64 MiB): more than anyone should read, kept
small in the test itself (one chunk, written again and again)."""


class Huge:
    """A server on 127.0.0.1 whose answers are too large: streamed (no Content-Length,
    `HUGE` chunks), or announced (a Content-Length of 500 MB, the body never sent), or
    exactly at the limit; it counts requests and the bytes it managed to send."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests = 0
        self.sent = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/stream", self.stream)
        app.router.add_post("/announced", self.announced)
        app.router.add_post("/at-limit", self.at_limit)
        return app

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(status=self.status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(HUGE):
                await response.write(CHUNK)
                self.sent += len(CHUNK)
        except (ConnectionError, RuntimeError):  # the client hung up
            return response
        await response.write_eof()
        return response

    async def announced(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(status=self.status, headers={"Content-Length": "500000000"})
        await response.prepare(request)
        await response.write(b'{"result": {}}')
        return response

    async def at_limit(self, request: web.Request) -> web.Response:
        self.requests += 1
        head, tail = b'{"result": {"pad": "', b'"}}'
        pad = b"p" * (protocol.MAX_ANSWER_BYTES - len(head) - len(tail))
        return web.Response(status=self.status, body=head + pad + tail)


def with_huge(status: int, test: Callable[[str, Huge], Awaitable[None]]) -> None:
    async def main() -> None:
        huge = Huge(status)
        async with serving(huge.app()) as url:
            await test(url, huge)

    asyncio.run(main())
