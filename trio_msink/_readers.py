"""Reading from every socket client of a sink in one task.

With ``handle_read`` a client's socket is read to notice the peer's EOF
(``CLOSED``) and to report what it sends (``on_message``). A task per client
blocked in ``receive_some`` costs a few KiB per client (the task, its
nursery and cancel scopes, Trio's registration of the socket), which at
thousands of viewers is most of what a viewer costs. Instead, the sockets
are registered in one ``epoll`` set of their own, and a single task waits
until that set is readable (an ``epoll`` descriptor is itself pollable, so
Trio waits on it like on any socket), then reads each socket that has
something: data, EOF or an error. Sockets stay registered in the kernel, not
in Python, while nothing happens.

Where ``select.epoll`` does not exist (not Linux), :data:`GROUPED` is False
and the sink gives each readable client its own reader task instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select

import trio

from ._client import Client
from ._enums import ClientStatus

__all__ = ["GROUPED", "ReadGroup"]

logger = logging.getLogger("trio_msink")

#: Whether sockets can be read by one :class:`ReadGroup` task on this system.
GROUPED = hasattr(select, "epoll")

# What one read takes at most, as trio.SocketStream.receive_some does by default.
_RECEIVE_SIZE = 65536
# Events handled per pass; the rest wait for the next pass (level-triggered).
_MAX_EVENTS = 1024


class ReadGroup:
    """The readable socket clients of one sink, read by :meth:`run`."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._clients: dict[int, Client] = {}
        self._added = trio.Event()

    def add(self, client: Client) -> None:
        """Read ``client``'s socket (``client.fd``) from now on."""
        if self._epoll is None:
            self._epoll = select.epoll()
        fd = client.fd
        events = select.EPOLLIN | select.EPOLLRDHUP
        try:
            self._epoll.register(fd, events)
        except FileExistsError:
            # The number of a socket closed by its owner while still served,
            # whose registration outlived it: it now means this socket.
            self._epoll.modify(fd, events)
        self._clients[fd] = client
        self._added.set()

    def discard(self, client: Client) -> None:
        """Stop reading ``client``'s socket; nothing if it is not read."""
        fd = client.fd
        if self._clients.get(fd) is not client:
            return
        del self._clients[fd]
        if self._epoll is not None:
            # Closed by its owner already: the kernel dropped it.
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def close(self) -> None:
        """Release the epoll set (the sink is done)."""
        self._clients.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    async def run(self) -> None:
        """Wait for any registered socket to be readable and read it; forever."""
        while True:
            epoll = self._epoll
            if epoll is None or not self._clients:
                await self._added.wait()
                self._added = trio.Event()
                continue
            await trio.lowlevel.wait_readable(epoll.fileno())
            for fd, _ in epoll.poll(0, _MAX_EVENTS):
                client = self._clients.get(fd)
                if client is not None:
                    self._read(client)

    def _read(self, client: Client) -> None:
        try:
            data = os.read(client.fd, _RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError:
            # As trio.SocketStream.receive_some reports any socket error (a
            # broken stream): the connection is gone, CLOSED.
            logger.debug("reading from %r failed", client.stream, exc_info=True)
            data = b""
        if not data:
            self.discard(client)
            client.remove(ClientStatus.CLOSED)
            return
        client.received(data)
