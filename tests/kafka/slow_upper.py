"""A deliberately slow uppercase app, so a test can kill its process in the middle of a
batch: ``binder run tests.kafka.slow_upper --config <dir>``."""

import time


def shout(word: str) -> str:
    """Uppercase, taking a little while."""
    time.sleep(0.002)
    return word.upper()
