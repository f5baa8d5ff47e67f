"""Ctrl-C reaches a replay as the cancellation of its main task (asyncio.run's SIGINT
handler): no part of the pipeline may swallow it, or the replay runs on to the end and exits
0. The race that made test_faults_messages' Ctrl-C test flaky, pinned down step by step."""

from __future__ import annotations

import asyncio

from monitor.events import Event
from monitor.pipeline.verdicts import VerdictQueue


def test_a_cancel_while_the_queue_closes_reaches_the_caller() -> None:
    async def main() -> bool:
        events: list[Event] = []
        queue = VerdictQueue(events.append, max_in_flight=4)
        queue.start()
        await asyncio.sleep(0)  # the consumer waits for its first item
        closing = asyncio.create_task(queue.close())
        consumer = queue._consumer
        assert consumer is not None
        # Step until close() has cancelled its consumer and waits for it to end: the
        # moment a SIGINT landed in when the flaky run exited 0.
        while not consumer.cancelling():
            await asyncio.sleep(0)
        closing.cancel()
        try:
            await closing
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(main()), "close() swallowed its caller's cancellation"
