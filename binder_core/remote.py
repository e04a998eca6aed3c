"""The command line's side of the management endpoint: ``binder health``, ``binder
bindings --url``, ``binder pause|resume|stop|start NAME`` against a running app.

Standard library only (a command should start fast); the token comes from the environment
variable the app reads too (``BINDER_MANAGEMENT_TOKEN`` unless told otherwise), never from
the command line, where other users of the machine could read it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from binder_core.errors import BinderException

#: Seconds a request to a running app may take.
TIMEOUT = 10.0


class RemoteError(BinderException):
    """The running app could not be asked, or said no."""


def call(
    url: str, path: str, token_env: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """``GET`` (or ``POST`` with ``body``) ``path`` of the endpoint at ``url``: the status
    and the decoded JSON answer. A readiness report answered with 503 (not ready) is an
    answer; any other refusal raises ``RemoteError`` with the endpoint's own words."""
    target = urllib.parse.urljoin(url.rstrip("/") + "/", path.lstrip("/"))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(target, data=data, method="POST" if body else "GET")
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    token = os.environ.get(token_env)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=TIMEOUT) as response:
            raw = response.read()
            answer = _decode(raw)
            if answer is _NOT_JSON:
                raise RemoteError(
                    f"{url} is not a binder management endpoint: {path} answered "
                    f"{response.status} with {_shown(raw)}"
                )
            return response.status, answer
    except urllib.error.HTTPError as exc:
        answer = _decode(exc.read())
        if answer is _NOT_JSON:
            answer = None
        if exc.code == 401:
            raise RemoteError(
                f"{url} wants a token: put it in the environment variable {token_env}"
            ) from None
        if exc.code == 503 and isinstance(answer, dict) and "binders" in answer:
            return exc.code, answer  # not ready: the report says why
        what = answer.get("error") if isinstance(answer, dict) else None
        raise RemoteError(f"{url}: {what or f'{exc.code} {exc.reason}'}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"cannot reach the management endpoint at {url}: {reason}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the request carries the token, which must go nowhere but
    the endpoint it was meant for. A redirect is reported as the answer it is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)

#: What ``_decode`` returns for a body that is not JSON.
_NOT_JSON: Any = object()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _shown(raw: bytes) -> str:
    text = raw[:80].decode("utf-8", "replace").strip()
    return repr(text + ("..." if len(raw) > 80 else "")) if text else "an empty body"
