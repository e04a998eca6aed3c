"""The smallest processor: words in, shouted words out.

Run it with ``binder run apps.uppercase --config config/uppercase``.
"""


def uppercase(word: str) -> str:
    """Shout the word."""
    return word.upper()


def reverse(word: str) -> str:
    """Reverse the word; compose it with ``uppercase|reverse``."""
    return word[::-1]
