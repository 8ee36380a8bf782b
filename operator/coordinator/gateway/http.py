"""The gateway's HTTP edge: request bodies read within bounds, and every failure (a
refusal of the API server, a bad body, a bug) answered in the origin's error shape."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import urllib3
from aiohttp import web

from coordinator import usecases
from coordinator.gateway import origin
from coordinator.k8s import admission, caller

log = logging.getLogger("coordinator.gateway")

BODY_SECONDS: Final = 10.0
"""How long a request may take to send its body."""
MAX_DEPTH: Final = admission.MAX_DEPTH
"""How deeply a request body may nest."""


def error(status: int, message: str) -> web.Response:
    """`message` in the origin's error shape, with `status`."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The API server's refusals, as the origin's error shape with its status."""
    try:
        return await handler(request)
    except caller.CallerError as exc:
        if exc.status == 401:
            return error(401, "the API server did not accept the bearer token")
        if exc.status == 0 or exc.status >= 500:
            return error(502, f"API server: {exc.message}")
        return error(exc.status, caller.denied(exc.message))
    except origin.BadRequestError as exc:
        return error(400, str(exc))
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timed out
        log.warning("cannot reach the API server: %s", exc)
        return error(502, "cannot reach the API server")
    except web.HTTPException:
        raise
    except Exception:  # a bug: said as JSON, without details
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error")


def refused(exc: usecases.RefusedError, not_found: str) -> web.Response:
    """A use case that did nothing: 404 with the origin's `not_found`, else 409."""
    if exc.why is usecases.Refusal.NOT_FOUND:
        return error(404, not_found)
    return error(409, exc.message)


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body, read within `BODY_SECONDS`; 400 naming what is wrong."""
    try:
        async with asyncio.timeout(BODY_SECONDS):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": f"body: not received within {BODY_SECONDS:g}s"}),
            content_type="application/json",
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise origin.BadRequestError(
            f"body: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    if not text.strip() and optional:
        return None
    if admission.deeper_than(raw, MAX_DEPTH):
        raise origin.BadRequestError(f"body: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise origin.BadRequestError(f"body: invalid JSON ({exc})") from None
