"""One instance of the hand-written consume-process-produce loop the scale-out benchmark
runs beside ``binder run`` instances: plain aiokafka in a consumer group, the same work per
record (decode and validate a ``Doc``, ``uppercase``, encode) and the same guarantees (the
outputs of a poll confirmed before its offsets are committed).

``python -m bench.scaleout_loop BOOTSTRAP SOURCE TARGET GROUP`` runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import pydantic_core
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError

from bench.app import Doc, uppercase

#: What the Kafka binder writes for ``contentType: application/json`` (Spring's mapping),
#: so both sides put the same bytes on the wire.
HEADERS = [
    ("contentType", b'"application/json"'),
    ("spring_json_header_types", b'{"contentType":"java.lang.String"}'),
]
#: The binder's producer and consumer defaults.
PRODUCER = {"acks": "all", "enable_idempotence": True, "max_batch_size": 16384, "linger_ms": 0}
MAX_RECORDS = 500


async def run(bootstrap: str, source: str, target: str, group: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_RECORDS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    await consumer.start()
    await producer.start()
    to_json, from_json, send = pydantic_core.to_json, Doc.model_validate_json, producer.send
    try:
        while not stop.is_set():
            data = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
            if not data:
                continue
            futures = []
            for records in data.values():
                for record in records:
                    doc = uppercase(from_json(record.value))
                    futures.append(await send(target, to_json(doc), headers=HEADERS))
            await asyncio.gather(*futures)
            # A rebalance may have taken partitions meanwhile: their new owner replays what
            # was not committed (at-least-once), as in the binder.
            owned = consumer.assignment()
            offsets = {tp: rs[-1].offset + 1 for tp, rs in data.items() if tp in owned}
            if offsets:
                # rebalanced during the commit: the same, a replay
                with contextlib.suppress(CommitFailedError, IllegalStateError):
                    await consumer.commit(offsets)
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m bench.scaleout_loop BOOTSTRAP SOURCE TARGET GROUP", file=sys.stderr)
        return 2
    asyncio.run(run(*argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
