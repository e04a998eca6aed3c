"""A Python app of two functions behind Spring's router (``functionRouter-in-0``): which
one runs for a message is named by the message's ``spring.cloud.function.definition``."""


def shout(word: str) -> str:
    return word.upper()


def whisper(word: str) -> str:
    return word.lower()
