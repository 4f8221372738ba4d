"""A libvirt domain's serial console as a byte stream that follows the domain through its restarts.

    console = DomainConsole("qemu+unix:///system?socket=…", "host-bm-1")   # the domain's name or UUID
    console.attach(received.extend)   # from now on what the guest writes on ttyS0 reaches received
    console.write(b"root\\r")          # typed on ttyS0 (kept until the console is open)
    console.detach()

It is libvirt's console (``virDomainOpenConsole``) on a non-blocking
``virStream``, whose data libvirt's event loop hands over in a thread of
this process (:func:`run_event_loop`, one loop for every console). While
attached, a keeper thread opens the console whenever the domain runs and
it is not open: at once when libvirt reports that the domain started (a
new QEMU, a new pty), else within :data:`RETRY` seconds (when the domain
was off, libvirtd restarted, or the stream broke). Opening it on
:meth:`~DomainConsole.attach` and on a start takes it from whoever held it
(``VIR_DOMAIN_CONSOLE_FORCE``), as a BMC owns the serial port; opening it
again after the stream broke while the domain ran does not, so a user who
took it with ``virsh console --force`` keeps it until they let go. A reset
or a reboot inside keeps QEMU and its pty, and so the stream. Output
reaches the callback in the event loop's thread; input written while the
console is not open waits (at most :data:`MAX_PENDING` bytes, the newest).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import libvirt

from dpustack.drivers.bmc import SerialConsole
from dpustack.libvirt_host import connect

log = logging.getLogger(__name__)

RETRY = 1.0
MAX_PENDING = 64 * 1024
READ_SIZE = 4096
KEEPALIVE = (5, 3)  # seconds between probes, probes unanswered before libvirt gives the connection up
_READ_EVENTS = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP)

_loop_lock = threading.Lock()
_loop: threading.Thread | None = None


def run_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread of this process, once. Connections opened
    after this get their stream data, domain events and keepalives there; call it before opening any."""
    global _loop
    with _loop_lock:
        if _loop is None:
            libvirt.virEventRegisterDefaultImpl()
            _loop = threading.Thread(target=_run_loop, name="libvirt-events", daemon=True)
            _loop.start()


def _run_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class DomainConsole(SerialConsole):
    """The serial console of domain ``name`` (a name or a UUID) on the libvirtd at ``uri`` (see the module's
    docstring)."""

    def __init__(self, uri: str, name: str):
        run_event_loop()
        self.uri = uri
        self.name = name
        self._by_uuid = _is_uuid(name)
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._output: Callable[[bytes], None] | None = None  # set: attached
        self._force = False  # the next open takes the console from whoever holds it
        self._stale = False  # the domain started again: the open stream is of its old QEMU
        self._opened_id = -1  # the domain's id (new at every start) when the stream was opened
        self._pending = bytearray()
        self._connection: libvirt.virConnect | None = None
        self._stream: libvirt.virStream | None = None
        self._keeper: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        """Whether the console is open now (attached, and the domain running)."""
        return self._stream is not None

    def attach(self, output: Callable[[bytes], None]) -> None:
        """Send what the guest writes to ``output`` from now on (in the event loop's thread), taking the
        console from whoever holds it; returns at once, the console opens in the background."""
        with self._lock:
            self._output = output
            self._force = True
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name=f"console-{self.name}", daemon=True)
                self._keeper.start()
        self._kick.set()

    def detach(self) -> None:
        """Stop forwarding, forget unsent input and let the console go (in the background)."""
        with self._lock:
            self._output = None
            self._pending.clear()
        self._kick.set()

    def write(self, data: bytes) -> None:
        """Type ``data`` on the console: now if it is open, else once it is (while attached)."""
        with self._lock:
            if self._output is None:
                return
            self._pending += data
            del self._pending[:-MAX_PENDING]
            stream = self._stream
        if stream is not None:
            self._watch(stream, writable=True)

    # ------------------------------------------------------------- the keeper
    def _keep(self) -> None:
        """Open the console while attached and the domain runs; close it when detached."""
        while True:
            with self._lock:
                attached = self._output is not None
            self._kick.wait(RETRY if attached else None)
            self._kick.clear()
            with self._lock:
                attached, stream, stale = self._output is not None, self._stream, self._stale
                self._stale = False
            if stream is not None and (stale or not attached):
                self._close(stream)
                stream = None
            self._drop_dead_connection()
            if attached and stream is None:
                try:
                    self._open()
                except libvirt.libvirtError as exc:
                    log.debug("console of '%s' not open: %s", self.name, exc.get_error_message())

    def _open(self) -> None:
        connection = self._connected()
        domain = connection.lookupByUUIDString(self.name) if self._by_uuid else connection.lookupByName(self.name)
        if not domain.isActive():
            return
        with self._lock:
            force = self._force
        stream = connection.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            domain.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
        except libvirt.libvirtError:
            _abort(stream)
            raise
        opened_id = domain.ID()
        with self._lock:
            if self._output is None:  # detached meanwhile
                opened = False
            else:
                self._stream, self._opened_id, self._force, opened = stream, opened_id, False, True
        if not opened:
            _abort(stream)
            return
        # writable too: the first callback sends what was typed while the console was not open
        stream.eventAddCallback(_READ_EVENTS | libvirt.VIR_STREAM_EVENT_WRITABLE, self._on_stream, None)
        log.info("console of '%s' open%s", self.name, " (taken over)" if force else "")

    def _close(self, stream: libvirt.virStream) -> None:
        self._release(stream)
        log.info("console of '%s' closed", self.name)

    def _release(self, stream: libvirt.virStream) -> bool:
        """End ``stream`` and forget it if it is the open one; whether it was."""
        with self._lock:
            current = self._stream is stream
            if current:
                self._stream = None
        try:
            stream.eventRemoveCallback()
        except libvirt.libvirtError:
            pass
        _abort(stream)
        return current

    def _connected(self) -> libvirt.virConnect:
        if self._connection is None:
            connection = connect(self.uri)
            try:
                connection.setKeepAlive(*KEEPALIVE)
                connection.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                  self._on_lifecycle, None)
                connection.registerCloseCallback(self._on_connection_closed, None)
            except libvirt.libvirtError:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _drop_dead_connection(self) -> None:
        connection = self._connection
        if connection is not None and not _alive(connection):
            self._connection = None
            try:
                connection.close()
            except libvirt.libvirtError:
                pass

    # ------------------------------------------------ event loop callbacks
    def _on_stream(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE and not self._read(stream):
            return
        if events & libvirt.VIR_STREAM_EVENT_WRITABLE and not self._send(stream):
            return
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._broken(stream)

    def _read(self, stream: libvirt.virStream) -> bool:
        """Hand everything there is to read to the output; False if the stream broke or ended."""
        while True:
            try:
                data = stream.recv(READ_SIZE)
            except libvirt.libvirtError:
                data = b""
            if data == -2:  # nothing more for now
                return True
            if not data:
                self._broken(stream)
                return False
            with self._lock:
                output = self._output if self._stream is stream else None
            if output is not None:
                output(data)

    def _send(self, stream: libvirt.virStream) -> bool:
        """Send the pending input; False if the stream broke."""
        with self._lock:
            data = bytes(self._pending) if self._stream is stream else b""
        sent = 0
        if data:
            try:
                sent = stream.send(data)
            except libvirt.libvirtError:
                self._broken(stream)
                return False
        with self._lock:
            if sent > 0:
                del self._pending[:sent]
            more = bool(self._pending) and self._stream is stream
        self._watch(stream, writable=more)
        return True

    def _watch(self, stream: libvirt.virStream, *, writable: bool) -> None:
        try:
            stream.eventUpdateCallback(_READ_EVENTS | (libvirt.VIR_STREAM_EVENT_WRITABLE if writable else 0))
        except libvirt.libvirtError:
            pass  # closed meanwhile: the keeper sends the input once the console is open again

    def _broken(self, stream: libvirt.virStream) -> None:
        if not self._release(stream):
            return
        log.info("console of '%s' ended (the domain stopped, or someone took it)", self.name)
        self._kick.set()

    def _on_lifecycle(self, _connection: libvirt.virConnect, domain: libvirt.virDomain, event: int,
                      _detail: int, _opaque: object) -> None:
        if event != libvirt.VIR_DOMAIN_EVENT_STARTED or self.name not in (domain.name(), domain.UUIDString()):
            return
        started_id = domain.ID()
        with self._lock:
            if self._stream is not None and started_id == self._opened_id:
                return  # opened on this start already
            self._force = True
            self._stale = self._stream is not None
        self._kick.set()

    def _on_connection_closed(self, _connection: libvirt.virConnect, _reason: int, _opaque: object) -> None:
        with self._lock:
            self._stream = None  # gone with its connection, which the keeper replaces
        self._kick.set()


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


def _alive(connection: libvirt.virConnect) -> bool:
    try:
        return bool(connection.isAlive())
    except libvirt.libvirtError:
        return False


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
