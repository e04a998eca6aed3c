"""From a received message to the argument a function declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from binder_core.conversion import Decoder, decoder_for, media_type, unwrapped
from binder_core.errors import ConversionError
from binder_core.functions import FunctionInfo
from binder_core.message import CONTENT_TYPE, Message
from binder_core.spi import Converter

#: Distinct ``contentType`` header values whose decoder is remembered per binding.
_DECODER_CACHE = 64


def argument_maker(
    info: FunctionInfo, content_type: str, converters: dict[str, Converter]
) -> Callable[[Message[bytes]], Any]:
    """Message -> the argument the function declares. A message's own ``contentType``
    header wins over the binding's, as in Spring.

    The decoder is looked up by the header's exact value in a small per-binding table, so a
    stream whose messages all carry the same header parses it once, not once per message.
    """
    default = decoder_for(info.input_type, content_type, converters)
    default_mt = media_type(content_type)
    by_header: dict[Any, Decoder] = {}
    # The same, unwrapped where the decoder is a thin guard around one call (pydantic's
    # JSON validator): that call is made directly, and only when it raises does the
    # decoder run, to raise the error that names the problem.
    fast_default = unwrapped(default)
    fast_by_header: dict[Any, Callable[[bytes], Any] | None] = {}

    def resolve(ct: Any) -> Decoder:
        mt = media_type(ct)
        if mt == default_mt or (mt not in converters and not mt.endswith("+json")):
            found = default
        else:
            found = decoder_for(info.input_type, mt, converters)
        try:
            if len(by_header) < _DECODER_CACHE:
                by_header[ct] = found
                fast_by_header[ct] = unwrapped(found)
        except TypeError:  # an unhashable header value: decided afresh each time
            pass
        return found

    def decoder(msg: Message[bytes]) -> Decoder:
        ct = msg.headers.get(CONTENT_TYPE)
        if ct is None:
            return default
        try:
            found = by_header.get(ct)
        except TypeError:
            found = None
        return found if found is not None else resolve(ct)

    def failure(exc: Exception) -> ConversionError:
        # Whatever a decoder or a plugin's converter raises (a RecursionError on deeply
        # nested input, an odd header value) is a conversion failure of this one message:
        # not retried, dead-lettered with the reason.
        if isinstance(exc, RecursionError):
            return ConversionError("payload nested too deeply to convert")
        # The exception's own text may quote the payload: the reason names its type only.
        return ConversionError(f"cannot convert the payload ({type(exc).__name__})")

    if info.wants_message:

        def with_headers(msg: Message[bytes]) -> Any:
            try:
                return Message(decoder(msg)(msg.payload), msg.headers, msg.key, msg.partition)
            except ConversionError:
                raise
            except Exception as exc:
                raise failure(exc) from exc

        return with_headers

    def argument(msg: Message[bytes]) -> Any:
        # A try block costs nothing until it catches.
        ct = msg.headers.get(CONTENT_TYPE)
        if ct is None:
            fast = fast_default
        else:
            try:
                fast = fast_by_header.get(ct)
            except TypeError:
                fast = None
        if fast is not None:
            try:
                return fast(msg.payload)
            except Exception:  # the decoder below says what was wrong
                pass
        try:
            if ct is None:
                return default(msg.payload)
            try:
                found = by_header.get(ct)
            except TypeError:
                found = None
            return (found if found is not None else resolve(ct))(msg.payload)
        except ConversionError:
            raise
        except Exception as exc:
            raise failure(exc) from exc

    return argument
