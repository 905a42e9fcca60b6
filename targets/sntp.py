"""A loopback SNTP server (RFC 4330, server side) serving this host's clock.

The bundled targets stamp their audit events with the host clock; this server hands the
same clock to the harness (``clock.ntp_server``), so that AUDIT-004 can bound its own
offset the way it would against an operator's time server. It answers client requests
(mode 3) on 127.0.0.1 only, and stops with the target.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

#: Seconds from the NTP era (1900-01-01) to the Unix epoch.
NTP_EPOCH = 2_208_988_800
#: Not a primary reference: the host clock, as ntpd's local clock driver announces itself.
STRATUM = 10
REFERENCE_ID = b"LOCL"
PRECISION = -20  # log2 seconds: about a microsecond


def ntp_time(t: float) -> bytes:
    """``t`` (Unix seconds) as a 64-bit NTP timestamp."""
    secs, frac = divmod(t + NTP_EPOCH, 1)
    return struct.pack("!II", int(secs) & 0xFFFFFFFF, int(frac * 2**32) & 0xFFFFFFFF)


def answer(request: bytes, received: float, sent: float) -> bytes | None:
    """The server's reply to a client ``request`` received at ``received``; None to ignore it.

    Only a client packet (mode 3, at least 48 bytes) is answered: LI 0, the client's
    version, mode 4, its transmit time echoed as the originate time.
    """
    if len(request) < 48 or request[0] & 7 != 3:
        return None
    version = (request[0] >> 3) & 7 or 4
    head = struct.pack("!BBbb", (version << 3) | 4, STRATUM, request[2], PRECISION)
    roots = struct.pack("!II", 0, 0)  # root delay, root dispersion: the host is the root
    return (
        head
        + roots
        + REFERENCE_ID
        + ntp_time(received)
        + request[40:48]
        + (ntp_time(received) + ntp_time(sent))
    )


class SntpServer:
    """An SNTP server on 127.0.0.1 (a free UDP port), answering until :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.2)  # how soon stop() is noticed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``host:port``, as ``clock.ntp_server`` takes it."""
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            received = time.time()
            reply = answer(request, received, time.time())
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, peer)

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._stop.set()
        with contextlib.suppress(OSError):  # wakes the waiting receive at once
            self._sock.sendto(b"", self._sock.getsockname())
        self._thread.join(1.0)
        self._sock.close()
