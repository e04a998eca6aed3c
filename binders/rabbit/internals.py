"""The one place the RabbitMQ binder reaches below pika's public API (quarantined here,
and checked by tests/rabbit/test_internals.py, which names the attribute a pika release
removed): pika's asyncio connection, adapted to write each loop iteration's frames in one
go and to read content headers with our own bounded reader (floating point values right,
crafted tables harmless).

The overrides sit on pika's adapter seam: ``_adapter_emit_data`` (the method an I/O adapter
implements to send bytes) and ``_read_frame``, with the connection's ``_frame_buffer`` and
``_transport``. pika is pinned below 2; this was measured and tested with pika 1.4.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from pika import frame as pika_frame
from pika.adapters.asyncio_connection import AsyncioConnection

from binders.rabbit.headers import properties_of

_decode_frame = pika_frame.decode_frame
_Header = pika_frame.Header
_FRAME_HEADER, _FRAME_END = 2, 0xCE
_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_CONTENT = struct.Struct(">HHQ")  # class, weight, body size

#: Outgoing bytes gathered before they are handed to the socket anyway.
_COALESCE_LIMIT = 1 << 20


class CoalescingConnection(AsyncioConnection):  # type: ignore[misc]
    """pika's asyncio connection, writing each loop iteration's frames in one go, and
    reading floating point headers right.

    pika hands every frame (three per published message: method, header, body) to its
    transport separately, and the transport makes one ``send`` system call per frame:
    measured here, about half of the CPU time spent publishing. Gathering the frames written
    during one iteration of the loop and writing them as one buffer keeps their order and
    only changes how many system calls carry them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending_out: list[bytes] = []
        self._pending_size = 0
        self._flush_scheduled = False
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        self._pending_out.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _COALESCE_LIMIT:
            self._flush_out()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _read_frame(self) -> tuple[int, Any]:
        # Content headers are read here (``properties_of``): pika's decoder recurses into
        # nested tables, so a table a few thousand levels deep raised RecursionError in the
        # middle of the connection's input, which closed the connection, and the same
        # message came back after every reconnect. Every other frame is pika's.
        buf = self._frame_buffer
        if len(buf) >= 7 + _CONTENT.size + 3 and buf[0] == _FRAME_HEADER:
            _, channel, size = _HEAD.unpack_from(buf)
            end = 7 + size + 1
            if size >= _CONTENT.size + 2 and end <= len(buf) and buf[end - 1] == _FRAME_END:
                _class, _weight, body_size = _CONTENT.unpack_from(buf, 7)
                properties = properties_of(buf, 7 + _CONTENT.size, end - 1)
                return end, _Header(channel, body_size, properties)
        decoded: tuple[int, Any] = _decode_frame(buf)
        return decoded

    def _flush_out(self) -> None:
        self._flush_scheduled = False
        pending = self._pending_out
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        transport = self._transport
        if transport is not None:  # gone with the connection: nothing left to send to
            transport.write(data)
