"""Streamheaders: the rules of docs/semantics.rst, section "Streamheaders",
starting from its worked example.

``b(n)`` is data buffer n (10 bytes); the headers of the worked example are
H1 = ``hd1`` and H2 = ``head2`` (8 bytes together).
"""

from __future__ import annotations

import pytest
import trio
from conftest import RecordingStream, b, read_exactly, settle, socket_stream_pair, stats

from trio_msink import Buffer, ClientStats, ClientStatus, Sink

H1, H2 = b"hd1", b"head2"
HEADERS = H1 + H2


pytestmark = pytest.mark.usefixtures("no_spin")


async def worked_example(sink: Sink) -> tuple[RecordingStream, RecordingStream]:
    """The worked example: headers [H1, H2]; add A; push H1, H2 flagged
    HEADER, then b0; add B; push b1. Returns (A, B)."""
    sink.set_streamheader([H1, H2])
    a = RecordingStream()
    sink.add(a)
    await sink.send(Buffer(H1, header=True))
    await sink.send(Buffer(H2, header=True))
    await sink.send(b(0))
    await settle()
    assert a.data == HEADERS + b(0)
    assert sink.bytes_served == 18
    c = RecordingStream()
    sink.add(c)
    await sink.send(b(1))
    await settle()
    return a, c


# -- new clients get the headers first -------------------------------------------------


async def test_a_new_client_gets_the_headers_before_its_first_data_buffer() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a, c = await worked_example(sink)
            assert a.data == HEADERS + b(0) + b(1)
            assert c.data == HEADERS + b(1)
            assert sink.bytes_served == 18 + 10 + 18
            assert sink.bytes_to_serve == 20  # headers are not data
            assert sink.buffers_queued == 1


async def test_header_buffers_equal_to_the_streamheader_are_never_queued() -> None:
    with trio.fail_after(5):
        async with Sink(bytes_min=1000) as sink:
            sink.set_streamheader([Buffer(H1, header=True), Buffer(H2, header=True)])
            await sink.send(Buffer(H1, header=True))
            await sink.send(Buffer(H2, header=True))
            assert sink.buffers_queued == 0
            assert sink.bytes_to_serve == 0
            await sink.send(b(0))
            assert sink.buffers_queued == 1


async def test_a_new_socket_client_gets_the_headers_first() -> None:
    with trio.fail_after(5):
        a_side, a_peer = socket_stream_pair()
        c_side, c_peer = socket_stream_pair()
        async with Sink() as sink:
            sink.set_streamheader([H1, H2])
            sink.add(a_side)
            await sink.send(Buffer(H1, header=True))
            await sink.send(Buffer(H2, header=True))
            await sink.send(b(0))
            assert await read_exactly(a_peer, 18) == HEADERS + b(0)
            sink.add(c_side)
            await sink.send(b(1))
            assert await read_exactly(a_peer, 10) == b(1)
            assert await read_exactly(c_peer, 18) == HEADERS + b(1)
            await settle()
            assert sink.bytes_served == 46
            assert stats(sink, a_side).bytes_sent == 28
            assert stats(sink, c_side).bytes_sent == 18
        for stream in (a_side, a_peer, c_side, c_peer):
            await stream.aclose()


# -- changed headers -------------------------------------------------------------------


async def test_changed_headers_are_resent_to_existing_clients() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a, c = await worked_example(sink)
            sink.set_streamheader([b"new1", b"hd"])
            await sink.send(b(2))
            await settle()
            assert a.data == HEADERS + b(0) + b(1) + b"new1hd" + b(2)
            assert c.data == HEADERS + b(1) + b"new1hd" + b(2)
            await sink.send(b(3))
            await settle()
            assert c.data.endswith(b"new1hd" + b(2) + b(3))  # once, not per buffer


async def test_without_resend_only_new_clients_get_changed_headers() -> None:
    with trio.fail_after(5):
        async with Sink(resend_streamheader=False) as sink:
            a, c = await worked_example(sink)
            sink.set_streamheader([b"new1", b"hd"])
            late = RecordingStream()
            sink.add(late)
            await sink.send(b(2))
            await settle()
            assert a.data == HEADERS + b(0) + b(1) + b(2)
            assert c.data == HEADERS + b(1) + b(2)
            assert late.data == b"new1hd" + b(2)


async def test_cleared_headers_send_nothing_extra() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a, c = await worked_example(sink)
            sink.set_streamheader(None)
            late = RecordingStream()
            sink.add(late)
            await sink.send(b(2))
            await settle()
            assert a.data == HEADERS + b(0) + b(1) + b(2)
            assert c.data == HEADERS + b(1) + b(2)
            assert late.data == b(2)
            sink.set_streamheader([])
            await sink.send(b(3))
            await settle()
            assert late.data == b(2) + b(3)


async def test_identical_headers_set_again_are_not_resent() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a, _ = await worked_example(sink)
            sink.set_streamheader([Buffer(H1), Buffer(H2)])
            await sink.send(b(2))
            await settle()
            assert a.data == HEADERS + b(0) + b(1) + b(2)


async def test_first_headers_reach_clients_that_had_none_even_without_resend() -> None:
    """A client that got no headers (there were none) gets the first ones
    set, whatever resend_streamheader says (docs/semantics.rst,
    "Streamheaders")."""
    with trio.fail_after(5):
        async with Sink(resend_streamheader=False) as sink:
            a = RecordingStream()
            sink.add(a)
            await sink.send(b(0))
            await settle()
            sink.set_streamheader([H1, H2])
            await sink.send(b(1))
            await settle()
            assert a.data == b(0) + HEADERS + b(1)


async def test_headers_are_those_current_when_the_client_takes_its_next_buffer() -> None:
    """As GStreamer (docs/gstreamer.rst, Q19): a lagging client gets the new
    headers before its next data buffer, even one queued before the change."""
    with trio.fail_after(5):
        async with Sink() as sink:
            sink.set_streamheader([H1, H2])
            s = RecordingStream(stalled=True)
            sink.add(s)
            await sink.send(b(0))
            await settle()  # S took H1 H2 b0; its stream blocks inside send_all(H1)
            await sink.send(b(1))  # waiting, queued under the old headers
            sink.set_streamheader([b"new1", b"hd"])
            s.unstall()
            await settle()
            assert s.data == HEADERS + b(0) + b"new1hd" + b(1)


# -- header buffers that are data ------------------------------------------------------


async def test_a_header_buffer_not_in_the_streamheader_is_data() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            sink.set_streamheader([H1])
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(b"other", header=True))
            await sink.send(b(0))
            await settle()
            assert a.data == H1 + b"other" + b(0)
            assert sink.bytes_to_serve == 15
            assert sink.bytes_served == 18


async def test_a_header_buffer_without_any_streamheader_is_data() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(H1, header=True))
            await settle()
            assert a.data == H1
            assert sink.bytes_to_serve == 3


async def test_a_data_buffer_equal_to_a_header_is_data() -> None:
    with trio.fail_after(5):
        async with Sink() as sink:
            sink.set_streamheader([H1])
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(H1))  # not flagged HEADER
            await settle()
            assert a.data == H1 + H1
            assert sink.bytes_to_serve == 3


# -- stats -----------------------------------------------------------------------------


async def test_client_stats_count_headers_in_bytes_sent_but_not_their_timestamps() -> None:
    with trio.fail_after(5):
        seen: list[ClientStats | None] = []
        sink = Sink(sync=False)
        sink.on_client_removed = lambda stream, status: seen.append(sink.get_stats(stream))
        async with sink:
            sink.set_streamheader([Buffer(H1, pts=99.0), Buffer(H2, pts=99.0)])
            a = RecordingStream()
            sink.add(a)
            await sink.send(Buffer(H1, header=True))
            await sink.send(Buffer(H2, header=True))
            await sink.send(Buffer(b(0), pts=1.0))
            await sink.send(Buffer(b(1), pts=2.0))
            await settle()
            st = stats(sink, a)
            assert st.bytes_sent == 8 + 20  # headers + data
            assert st.disconnect_time == 0
            assert st.connect_time > 0
            assert st.connect_duration >= 0
            assert st.last_activity_time >= st.connect_time
            assert st.status == ClientStatus.OK
            assert st.first_buffer_ts == 1.0  # header timestamps do not count
            assert st.last_buffer_ts == 2.0
            assert st.buffers_dropped == 0
            assert st.lag_buffers == 0
            assert st.lag_bytes == 0
            assert sink.bytes_served == 28
            assert sink.bytes_to_serve == 20
            assert seen == []
            sink.remove(a)
            assert len(seen) == 1
            inside = seen[0]
            assert inside is not None
            assert inside.status == ClientStatus.REMOVED
            assert inside.disconnect_time >= inside.connect_time > 0
            assert inside.bytes_sent == 28
            assert sink.get_stats(a) is None
