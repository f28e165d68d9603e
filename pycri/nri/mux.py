"""NRI's connection multiplexer, sans-IO: several byte streams over one socket.

NRI runs two ttrpc connections over a plugin's single unix socket: on connection
:data:`PLUGIN_SERVICE_CONN` (1) the runtime calls the plugin's ``Plugin`` service, on
:data:`RUNTIME_SERVICE_CONN` (2) the plugin calls the runtime's ``Runtime`` service. Each side
is a ttrpc client on one and a ttrpc server on the other.

What the real peer does (github.com/containerd/nri, ``pkg/net/multiplex/mux.go``):

* A frame is an 8-byte header (the connection id and the payload length, 32-bit big-endian)
  and the payload. A write longer than :data:`MAX_PAYLOAD` (a ttrpc header plus ttrpc's
  4 MiB maximum message) is cut into several frames; a write of nothing is one empty frame.
* Opening a connection sends nothing: both sides simply agree on the ids. Id 0 is reserved.
  Frames for an id this side has not opened are dropped.
* There is no close, reset or flow control per connection; the socket ending ends them all.

Frames this side sends hold at most :data:`SEND_FRAME` (4096) bytes. Upstream's reader hands
each frame whole to one ``Read`` of the ttrpc channel above it, whose ``bufio.Reader`` reads
into its 4096-byte buffer whenever the caller wants fewer bytes than that (a ttrpc header, the
tail of a message); a longer frame then fails that read with ENOMEM ("error receiving
message: cannot allocate memory") and the message is lost. Go's own writer never sends such a
frame in those places because its ``bufio.Writer`` writes the start of each message in
4096-byte pieces; frames of at most 4096 bytes fit every read the peer makes.

Deviation: upstream reads a frame of any announced length; :class:`Mux` refuses one longer
than :data:`MAX_PAYLOAD` (no conforming peer sends one) with :class:`MuxError`, so a corrupt
header cannot make it buffer gigabytes. The driver then closes the socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pycri.nri.ttrpc import HEADER_LENGTH as TTRPC_HEADER_LENGTH
from pycri.nri.ttrpc import MAX_MESSAGE_LENGTH as TTRPC_MAX_MESSAGE_LENGTH

HEADER = struct.Struct(">II")
HEADER_LENGTH = HEADER.size  # 8
MAX_PAYLOAD = TTRPC_HEADER_LENGTH + TTRPC_MAX_MESSAGE_LENGTH
SEND_FRAME = 4096  # the size of the peer's bufio.Reader buffer (above)

RESERVED_CONN = 0
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2


class MuxError(Exception):
    """The peer sent something no multiplexer sends; the socket must be closed."""


@dataclass(frozen=True)
class MuxData:
    conn_id: int
    data: bytes


class Mux:
    """Frames out for :meth:`send`, payloads in for the connections :meth:`open`-ed."""

    def __init__(self, *, max_payload: int = MAX_PAYLOAD, send_frame: int = SEND_FRAME) -> None:
        self.max_payload = max_payload  # the longest frame accepted
        self.send_frame = min(send_frame, max_payload)  # the longest frame sent
        self._open: set[int] = set()
        self._buffer = bytearray()
        self._out = bytearray()

    def open(self, conn_id: int) -> None:
        """Accept data for ``conn_id`` from now on (opening tells the peer nothing)."""
        if conn_id == RESERVED_CONN:
            raise ValueError(f"ConnID {conn_id} is reserved")
        if not 0 < conn_id < 1 << 32:
            raise ValueError(f"ConnID {conn_id} is out of range")
        self._open.add(conn_id)

    def close(self, conn_id: int) -> None:
        """Drop data for ``conn_id`` from now on."""
        self._open.discard(conn_id)

    def send(self, conn_id: int, data: bytes) -> None:
        """Queue ``data`` for ``conn_id``, in frames of at most ``send_frame`` bytes."""
        if conn_id == RESERVED_CONN:
            raise ValueError(f"ConnID {conn_id} is reserved")
        view = memoryview(data)
        while True:
            chunk = view[: self.send_frame]
            self._out += HEADER.pack(conn_id, len(chunk))
            self._out += chunk
            view = view[len(chunk) :]
            if not view:
                return

    def receive_data(self, data: bytes) -> list[MuxData]:
        """Payloads for open connections, in order; consecutive ones for one connection are joined."""
        self._buffer += data
        received: list[MuxData] = []
        while len(self._buffer) >= HEADER_LENGTH:
            conn_id, length = HEADER.unpack_from(self._buffer)
            if length > self.max_payload:
                raise MuxError(f"frame of {length} bytes for connection {conn_id}, more than the {self.max_payload} allowed")
            if len(self._buffer) < HEADER_LENGTH + length:
                break
            payload = bytes(self._buffer[HEADER_LENGTH : HEADER_LENGTH + length])
            del self._buffer[: HEADER_LENGTH + length]
            if conn_id not in self._open:
                continue
            if received and received[-1].conn_id == conn_id:
                received[-1] = MuxData(conn_id, received[-1].data + payload)
            else:
                received.append(MuxData(conn_id, payload))
        return received

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def data_to_send(self) -> bytes:
        data, self._out = bytes(self._out), bytearray()
        return data
