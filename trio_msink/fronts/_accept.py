"""The fronts' accept loop: ``trio.serve_listeners`` with the gate in front.

Differences from ``trio.serve_listeners``, and why:

* A peer outside ``--allow``, or over the connection limits of the
  admission counts (``_admission.py``), is closed at once, before any byte is read
  or any TLS handshake is made: it costs one descriptor for one moment.
* With a TLS context, each connection is wrapped in ``trio.SSLStream`` and
  its handshake must finish within ``handshake_timeout`` seconds; the
  context is asked for anew for each connection, so a reloaded certificate
  applies to new connections while the established ones keep theirs.
* When ``accept`` fails for lack of resources (EMFILE, ENFILE, ENOMEM,
  ENOBUFS), Trio logs the error with its traceback every 100 ms per
  listener; here one line says so, at most once per :data:`LOG_INTERVAL`
  seconds over all listeners, the loop waits (longer each time, up to
  :data:`MAX_BACKOFF` seconds) and then accepts again, and one line says
  when accepting works again.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from . import format_address
from ._access import Gate, host_of

__all__ = ["ACCEPT_CAPACITY_ERRNOS", "LOG_INTERVAL", "MAX_BACKOFF", "AcceptLoop"]

logger = logging.getLogger("trio_msink.fronts")

#: accept(2) errors that mean "no resources now", not "this listener is broken"
#: (the same set as trio.serve_listeners).
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: First and longest wait, in seconds, after such an error. A descriptor is
#: freed when any client leaves, which is often; a longer wait would only
#: delay the next client, a shorter one spins.
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0
#: At most one log line per this many seconds about accept failing.
LOG_INTERVAL = 10.0

Handler = Callable[[Any], Awaitable[object]]
#: What the loop accepts on: ``trio.SocketListener`` (or a listener of socket streams).
Listener = trio.abc.Listener[trio.SocketStream]


class AcceptLoop:
    """Accept connections on listeners and run a handler for each, through
    the ``gate`` (``--allow`` and the connection limits) and TLS.

    ``tls`` returns the server's current ``ssl.SSLContext`` (``None``: plain
    TCP); it is called once per connection. ``handshake_timeout`` bounds a
    TLS handshake, in seconds. One instance may serve several fronts and
    shares the rate limit of its log line between them.
    """

    def __init__(self, gate: Gate | None = None,
                 tls: Callable[[], ssl.SSLContext | None] | None = None,
                 handshake_timeout: float = 10.0) -> None:
        self.gate = gate
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self._logged_at = -float("inf")
        self._failing = 0  # listeners now backing off
        #: Connections closed at once: outside --allow, over the limits.
        self.refused = 0

    async def serve(self, handler: Handler, listeners: Sequence[Listener], *,
                    handler_nursery: trio.Nursery | None = None,
                    task_status: trio.TaskStatus[Sequence[Listener]]
                    = trio.TASK_STATUS_IGNORED) -> None:
        """Accept on every listener until cancelled, running
        ``handler(stream)`` for each admitted connection in
        ``handler_nursery`` (default: an internal one); ``stream`` is a
        ``trio.SocketStream``, or a ``trio.SSLStream`` whose handshake is
        done. The stream is closed when the handler returns. Reports the
        listeners through ``task_status`` once accepting."""
        async with trio.open_nursery() as nursery:
            if handler_nursery is None:
                handler_nursery = nursery
            for listener in listeners:
                nursery.start_soon(self._accept_forever, listener, handler, handler_nursery)
            task_status.started(listeners)

    async def _accept_forever(self, listener: Listener, handler: Handler,
                              nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                stream = await self.accept(listener)
                nursery.start_soon(self.serve_connection, stream, handler)

    async def accept(self, listener: Listener) -> trio.SocketStream:
        """The next connection of ``listener``, waiting (with the back-off
        and the one log line above) while ``accept`` fails for lack of
        descriptors or memory; any other error is raised. Also for loops of
        one's own, such as the ``--workers`` hand-off."""
        backoff = 0.0
        try:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    if not backoff:
                        self._failing += 1
                    self._log_failure(exc, listener)
                    backoff = min(MAX_BACKOFF, backoff * 2 or FIRST_BACKOFF)
                    await trio.sleep(backoff)
                    continue
                if backoff and self._failing == 1:
                    logger.warning("accepting connections again")
                    self._logged_at = -float("inf")
                return stream
        finally:
            if backoff:
                self._failing -= 1

    def _log_failure(self, exc: OSError, listener: Listener) -> None:
        now = trio.current_time()
        if now - self._logged_at < LOG_INTERVAL:
            return
        self._logged_at = now
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        sock = getattr(listener, "socket", None)
        where = format_address(sock.getsockname()) if sock is not None else "a listener"
        logger.warning("cannot accept on %s: %s (%s); new connections wait until "
                       "descriptors are free (raise the fd limit or lower --max-clients)",
                       where, os.strerror(exc.errno or 0).lower(), code)

    async def serve_connection(self, stream: trio.SocketStream, handler: Handler) -> None:
        """Serve one accepted connection: closed at once if the gate refuses
        its address or it is over the connection limits, else (after the TLS
        handshake, with TLS) ``handler(stream)``; closed at the end."""
        try:
            host = host_of(format_address(stream.socket.getpeername()))
        except OSError:  # reset before we looked: nothing to serve
            await trio.aclose_forcefully(stream)
            return
        gate = self.gate
        if gate is not None and not gate.address_allowed(host):
            self.refused += 1
            await trio.aclose_forcefully(stream)
            return
        admission = gate.admission if gate is not None else None
        if admission is not None and not admission.open_connection(host):
            self.refused += 1
            await trio.aclose_forcefully(stream)
            return
        try:
            served: trio.abc.Stream = stream
            context = self.tls() if self.tls is not None else None
            if context is not None:
                served = trio.SSLStream(stream, context, server_side=True,
                                        https_compatible=True)
                if not await self._handshake(served):
                    return
            try:
                await handler(served)
            finally:
                await trio.aclose_forcefully(served)
        finally:
            await trio.aclose_forcefully(stream)
            if admission is not None:
                admission.close_connection(host)

    async def _handshake(self, stream: trio.SSLStream[trio.SocketStream]) -> bool:
        with trio.move_on_after(self.handshake_timeout):
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # a plain-text client on a TLS port, a reset, a bad
                # certificate on the client's side: its business, not a log line
                logger.debug("TLS handshake failed: %r", exc.__cause__ or exc)
                return False
            return True
        logger.debug("TLS handshake timed out")
        return False
