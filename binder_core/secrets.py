"""Recognising secret values so that no dump, error or log line ever shows them.

One rule, used everywhere a value can reach a user: ``binder config``, configuration
errors, log records and the texts of exceptions the command line prints.

- A key is secret when its name (any case, kebab-, snake- or camelCase, dotted as in
  ``sasl.jaas.config``) mentions a password, secret, token, credential, private or SSL key,
  JAAS or SASL; everything under a secret key is secret too. A key that names a file
  (``password-file``, ``ssl-keyfile``) holds a path, which is shown: the file's contents
  are never read here.
- In any text, the user information of a URL (``amqp://user:pw@``, ``AMQPS://...``,
  ``redis://:pw@``, ``kafka+ssl://token@``) and the value of a ``password=...`` pair are
  masked, whatever the scheme.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from binder_core.properties import canonical

_SECRET = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|private-?key|ssl-?key|sasl|jaas|"
    r"api-?key|access-?key|auth"
)
#: Keys that hold where a secret is, not the secret (shown so a user can check the path).
_LOCATION = re.compile(r"(file|path|location|dir|mechanism)$")

# scheme://[user][:password]@ : the password, or a lone user name (often a token), masked.
_URL_USERINFO = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>[^/\s]*))?@",
    re.IGNORECASE,
)
# password=..., secret="...", sasl.jaas.config='...' inside free text (query strings, JAAS).
_PAIR = re.compile(
    r"(?P<key>\b[\w.-]*(?:pass(?:word|wd|phrase)?|secret|token|jaas[\w.-]*)\s*=\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&)]+)",
    re.IGNORECASE,
)

MASK = "******"


def is_secret(key: str) -> bool:
    """Whether a key's value must be masked (passwords, tokens, keys, SASL settings)."""
    c = canonical(str(key))
    return bool(_SECRET.search(c)) and not _LOCATION.search(c)


def _userinfo(m: re.Match[str]) -> str:
    if m["pw"] is not None:
        return f"{m['head']}{m['user']}:{MASK}@"
    return f"{m['head']}{MASK}@"


def mask_text(text: str) -> str:
    """``text`` with the user information of every URL and every ``password=...`` value
    masked."""
    if "@" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _PAIR.sub(lambda m: f"{m['key']}{MASK}", text)
    return text


def mask(value: Any, key: str = "", inherited: bool = False) -> Any:
    """A copy of a configuration tree with secret values replaced by a mask; everything
    below a secret key (``sasl: {jaas: {config: ...}}``) is masked too, except keys that
    say where a secret is (``sasl: {password-file: ...}``) or which mechanism is used."""
    location = bool(key) and bool(_LOCATION.search(canonical(str(key))))
    secret = (inherited and not location) or bool(key and is_secret(key))
    if isinstance(value, dict):
        return {k: mask(v, str(k), secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, key, secret) for v in value]
    if secret and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_repr(value: Any, key: str = "") -> str:
    """``repr`` of a value for an error message, its secrets masked."""
    return mask_text(repr(mask(value, key)))


class SecretFilter(logging.Filter):
    """Masks secrets in log records before any handler writes them: in the message, its
    arguments and a formatted traceback. Installed on the handlers, so records of every
    logger (broker clients included) pass through it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put a ``SecretFilter`` on every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
