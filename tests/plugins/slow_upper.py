"""A deliberately slow processor for the crash test: a batch takes long enough that a
SIGKILL lands while its entries are pending."""

import asyncio


async def upper(word: str) -> str:
    """Shout the word, slowly."""
    await asyncio.sleep(0.01)
    return word.upper()
