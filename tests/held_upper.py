"""An uppercase app for crash tests: ``binder run tests.held_upper``. With
``BINDER_TEST_HOLD=<word>`` in its environment, the batch holding that word never finishes,
so a test can kill the process with that batch certainly in flight; started again without
the variable, it processes everything."""

import asyncio
import os

HOLD = os.environ.get("BINDER_TEST_HOLD")


async def upper(word: str) -> str:
    """Shout the word; hold forever on ``BINDER_TEST_HOLD``."""
    if word == HOLD:
        await asyncio.Event().wait()
    return word.upper()
