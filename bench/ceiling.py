"""The ceiling for intake: a Faust agent that takes batches from ``crime.events`` and does nothing.

Run by bench/intake.py as a worker process; prints one JSON line with when it saw the first and the
last of BENCH_EVENTS events.
"""

from __future__ import annotations

import json
import os
import time

from schemas import topics
from services.runtime.app import make_faust_app
from services.runtime.settings import get_settings

settings = get_settings()
expected = int(os.environ["BENCH_EVENTS"])
app = make_faust_app(f"{settings.topic_prefix}bench-ceiling", settings)
channel = app.topic(settings.topic(topics.CRIME_EVENTS), key_serializer="raw", value_serializer="raw")
seen = 0
first = 0.0
BATCH_WITHIN_S = 0.2  # what the services used when they consumed through faust's stream
CEILING_BATCH = 500  # the figure the issue compares against: take_events(500)


@app.agent(channel)
async def do_nothing(stream):  # type: ignore[no-untyped-def]
    global seen, first
    async for events in stream.take_events(CEILING_BATCH, within=BATCH_WITHIN_S):
        if not first:
            first = time.time()
        seen += len(events)
        if seen >= expected:
            print(json.dumps({"first": first, "last": time.time(), "events": seen}), flush=True)
            os._exit(0)


if __name__ == "__main__":
    # The services' worker: faust's own, without the terminal spinner that turned every library's debug logging on
    # (a fair ceiling pays no more for logging than the intake it is set beside).
    from services.runtime.app import Worker

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()
