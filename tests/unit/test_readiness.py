"""The operator's readiness: starting until the objects are listed, then acting."""

from __future__ import annotations

import asyncio

from tests.support.shell import (
    in_loop,
)

# --- readiness ------------------------------------------------------------------------


@in_loop
async def test_readiness_waits_for_the_initial_listing_then_follows_leadership() -> None:
    from coordinator import app  # noqa: PLC0415 - kopf and the kubernetes client, only here

    operator = app.Operator.__new__(app.Operator)  # the parts readiness reads, no client
    operator.started = True
    operator.listed = asyncio.Event()
    operator.elector = None
    operator.shards = None
    operator.leading = asyncio.Event()
    assert operator.ready() == (False, "starting: listing and indexing the objects")
    operator.listed.set()
    assert operator.ready() == (True, "acting")
