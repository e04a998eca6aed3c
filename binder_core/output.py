"""The outbound side of a binding: encoding, headers and partition selection in front of a
binder's sink."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from binder_core.conversion import (
    TEXT,
    Encoder,
    ToBytes,
    encoder_of,
    is_json,
    is_json_text,
    media_type,
)
from binder_core.errors import ConversionError, DeliveryError, PartitionKeyError
from binder_core.expression import EvaluationError, compile_expression, select_partition
from binder_core.message import CONTENT_TYPE, Message
from binder_core.properties import ProducerProperties
from binder_core.spi import Outbox, Sink

if TYPE_CHECKING:
    from binder_core.tracing import Tracing

#: The broker transaction the current consumer batch runs in, if any: set by the core's
#: consumer loop, so that what a function sends itself (``StreamBridge``) joins it as its
#: returned outputs do. Only the core reads it; binders get the transaction as an argument.
TRANSACTION: ContextVar[Any] = ContextVar("binder_transaction", default=None)

#: Values that do not go straight to the converter: bytes and str are sent as they are,
#: a returned Message brings its own headers.
_NOT_DIRECT = (bytes, str, Message, bytearray, memoryview)

#: Most value types an output remembers as going straight to its converter.
_PLAIN_TYPES = 64


class Output:
    """Turns what a function returned into ``Message[bytes]`` and sends batches of them.

    Everything that does not depend on the value (content type, key expression, partition
    count) is resolved here once, so ``message(value)``, the wire message for one returned
    value (a returned ``Message`` keeps its headers), is the only per-value work.
    """

    def __init__(
        self,
        binding: str,
        destination: str,
        sink: Sink,
        encoder: Encoder,
        content_type: str,
        props: ProducerProperties,
    ) -> None:
        self.binding = binding
        self.destination = destination
        self.sink = sink
        #: Messages the broker confirmed, and messages given up on (counted per batch).
        self.sent = 0
        self.lost = 0
        #: Publish spans, when the app traces (``binder_core.tracing``).
        self.tracing: Tracing | None = None
        self._encode = encoder
        self._content_type = content_type
        #: A str on a JSON binding is sent as it is (as Spring does), but labelled
        #: text/plain unless it is JSON: a reader must not be told it is JSON when not.
        self._check_text = is_json(media_type(content_type))
        self._key = (
            compile_expression(props.partition_key_expression)
            if props.partition_key_expression
            else None
        )
        self._count = props.partition_count
        #: ``message`` is called once per output value: without a key expression it is a
        #: closure over what it needs, rather than a method looking up attributes.
        self.message: Callable[[Any], Message[bytes]] = (
            self._keyed_message if self._key is not None else self._plain(encoder, content_type)
        )
        #: ``header-mode: none``: no headers at all, the trace context included.
        self._headerless = props.header_mode == "none"
        if props.use_native_encoding or props.header_mode == "none":
            self.message = self._spring_modes(
                self.message, props.use_native_encoding, props.header_mode == "none"
            )

    def _spring_modes(
        self, message: Callable[[Any], Message[bytes]], native: bool, no_headers: bool
    ) -> Callable[[Any], Message[bytes]]:
        """Spring's ``use-native-encoding`` (the payload goes to the client as it is: bytes,
        or text as UTF-8, with no ``contentType`` added) and ``header-mode: none`` (no
        headers at all)."""
        key = self._key

        def made(value: Any) -> Message[bytes]:
            if not native:
                out = message(value)
            else:
                given = value.payload if isinstance(value, Message) else value
                headers = dict(value.headers) if isinstance(value, Message) else {}
                out = Message(_raw(given, self.binding), headers)
                if isinstance(value, Message):
                    out.key, out.partition = value.key, value.partition
                if key is not None:
                    out.key = key(given, headers)
                    if out.key is not None and self._count > 1:
                        out.partition = select_partition(out.key, self._count)
            if no_headers:
                out.headers = {}
            return out

        return made

    def label(self, value: Any) -> str:
        """The ``contentType`` of a value sent on this binding: the binding's, except for
        a ``str`` that is not JSON on a JSON binding, which says ``text/plain``."""
        if self._check_text and isinstance(value, str) and not is_json_text(value):
            return TEXT
        return self._content_type

    def _plain(self, encode: Encoder, content_type: str) -> Callable[[Any], Message[bytes]]:
        keyed = self._keyed_message
        label = self.label
        if not isinstance(encode, ToBytes):

            def message(value: Any) -> Message[bytes]:
                if isinstance(value, Message):
                    return keyed(value)
                return Message(encode(value), {CONTENT_TYPE: label(value)})

            return message
        direct = encode.encode_object
        # Per type already seen to be none of ``_NOT_DIRECT``, the call that encodes it
        # (``encoder_of``: pydantic-core's own for a model that can only hold finite
        # numbers). A lookup by type is about a tenth of an ``isinstance`` against that
        # tuple for a pydantic model (150 ns per value here: its metaclass is an ABCMeta).
        plain: dict[type, Callable[[Any], bytes]] = {}

        def direct_message(value: Any) -> Message[bytes]:
            kind = type(value)
            call = plain.get(kind)
            if call is None:
                if isinstance(value, _NOT_DIRECT):
                    if isinstance(value, Message):
                        return keyed(value)
                    return Message(encode(value), {CONTENT_TYPE: label(value)})
                call = encoder_of(direct, kind)
                if len(plain) < _PLAIN_TYPES:
                    plain[kind] = call
            try:
                payload = call(value)
            except Exception:
                payload = encode(value)  # raises the error that names the problem
            return Message(payload, {CONTENT_TYPE: content_type})

        return direct_message

    def _keyed_message(self, value: Any) -> Message[bytes]:
        if isinstance(value, Message):
            payload, headers = value.payload, dict(value.headers)
            if CONTENT_TYPE not in headers:
                headers[CONTENT_TYPE] = self.label(payload)
            # A key or partition the function chose travels with the message; a key
            # expression, when configured, decides instead.
            out = Message(self._encode(payload), headers, value.key, value.partition)
        else:
            payload, headers = value, {CONTENT_TYPE: self.label(value)}
            out = Message(self._encode(payload), headers)
        if self._key is not None:
            # As in Spring, a partitioned producer refuses a message without a key.
            try:
                key = self._key(payload, headers)
            except EvaluationError as exc:
                raise PartitionKeyError(
                    f"binding {self.binding}: partition-key-expression failed: {exc}"
                ) from None
            if key is None:
                raise PartitionKeyError(
                    f"binding {self.binding}: the partition key is null for this message "
                    "(partition-key-expression found nothing)"
                )
            out.key = key
            if self._count > 1:
                out.partition = select_partition(key, self._count)
        return out

    def publish(self, message: Message[bytes]) -> Message[bytes]:
        """``message`` with the trace context of its publish span, when tracing."""
        tracing = self.tracing
        return message if tracing is None else tracing.publish(message, not self._headerless)

    def outbox(self, transaction: Any = None) -> Outbox:
        """An outbox for one batch of outputs (joining ``transaction`` when the sink's
        binder runs it)."""
        return self.sink.outbox(transaction)

    async def send(self, messages: Sequence[Message[bytes]]) -> None:
        """Send and wait for the broker's confirmation of all of them; raise
        ``DeliveryError`` naming the first refusal."""
        if messages:
            await self.confirmed(await self.hand_over(messages))

    async def hand_over(self, messages: Sequence[Message[bytes]]) -> Outbox:
        """Give ``messages`` to the client without waiting for their confirmation: what is
        handed over later reaches the broker after them."""
        if self.tracing is not None:
            inject = not self._headerless
            messages = [self.tracing.publish(m, inject) for m in messages]
        box = self.sink.outbox(TRANSACTION.get())
        await box.add(messages)
        return box

    async def confirmed(self, box: Outbox) -> None:
        """Wait until what ``box`` holds is confirmed; raise ``DeliveryError`` naming the
        first refusal."""
        results = await box.confirm()
        ok = results.count(None)
        self.sent += ok
        if ok != len(results):
            refused = [r for r in results if r is not None]
            first = refused[0]
            raise DeliveryError(
                f"{len(refused)} of {len(results)} message(s) to '{self.destination}' not "
                f"accepted: {first}"
            ) from first

    async def close(self) -> None:
        """Close the sink."""
        await self.sink.close()


def _raw(payload: Any, binding: str) -> bytes:
    """A payload sent with native encoding: what the client's serializer takes."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    raise ConversionError(
        f"binding {binding} uses native encoding: return bytes or str (the client sends "
        f"them as they are), not {type(payload).__name__}"
    )
