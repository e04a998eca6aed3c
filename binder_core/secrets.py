"""Recognising secret values so that no dump, error or log line ever shows them."""

from __future__ import annotations

import re
from typing import Any

from binder_core.properties import canonical

_SECRET = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|credential|private-key|ssl-key|sasl-plain|"
    r"api-key|access-key|auth)",
)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<tail>@)")

MASK = "******"


def is_secret(key: str) -> bool:
    """Whether a key's value must be masked (passwords, tokens, keys, SASL settings)."""
    return bool(_SECRET.search(canonical(key)))


def mask_text(text: str) -> str:
    """Masks the password of any ``scheme://user:password@host`` inside ``text``."""
    return _URI_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)


def mask(value: Any, key: str = "") -> Any:
    """A copy of a configuration tree with secret values replaced by a mask."""
    if isinstance(value, dict):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key) for v in value]
    if key and is_secret(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value
