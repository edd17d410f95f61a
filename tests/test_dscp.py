"""qos_dscp: the DSCP mark on served sockets, IPv4 and IPv6, also under TLS."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from conftest import (
    TLS,
    Events,
    connect,
    serving,
    tcp_pair,
)

from trio_msink import Sink

pytestmark = pytest.mark.usefixtures("no_spin")


def _tos(stream: trio.abc.SendStream) -> int:
    assert isinstance(stream, trio.SocketStream)
    return stream.socket.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)


async def test_qos_dscp_sets_ip_tos_on_served_sockets() -> None:
    events = Events()
    with trio.fail_after(10):
        async with Sink(qos_dscp=46, **events.callbacks()) as sink, serving(sink.serve) as port:
            first = await connect(port)
            await events.wait_added(1)
            assert _tos(events.added[0]) == 46 << 2
            # an assignment restamps the clients already served, and later ones
            sink.qos_dscp = 10
            assert _tos(events.added[0]) == 10 << 2
            second = await connect(port)
            await events.wait_added(2)
            assert _tos(events.added[1]) == 10 << 2
            await first.aclose()
            await second.aclose()


async def test_qos_dscp_minus_one_leaves_the_socket_alone() -> None:
    server, client = await tcp_pair()
    server.socket.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 8 << 2)
    async with Sink() as sink:
        sink.add(server)
        assert _tos(server) == 8 << 2
    await server.aclose()
    await client.aclose()


async def test_qos_dscp_sets_traffic_class_on_ipv6_sockets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server, client = await tcp_pair(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    async with Sink(qos_dscp=34) as sink:
        sink.add(server)
        assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 34 << 2
    await server.aclose()
    await client.aclose()


async def test_qos_dscp_reaches_the_socket_under_tls(tls: TLS) -> None:
    server, client = await tcp_pair()
    stream = trio.SSLStream(server, tls.server, server_side=True)
    async with Sink(qos_dscp=8) as sink:
        sink.add(stream)
        assert _tos(server) == 8 << 2
        sink.remove(stream)
    await server.aclose()
    await client.aclose()
