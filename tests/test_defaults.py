"""The command's defaults (docs/cli.md, "Defaults made for a server"): bounded
lag whatever clients do, keyframe joins for video, and the user's flags win."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from _server import run_server
from trio.testing import MockClock

from trio_msink import Buffer, ClientStatus, Format, RecoverPolicy, Sink, SyncMethod
from trio_msink.cli._defaults import (
    COMMAND_PROPERTIES,
    apply_properties,
    describe_default,
    format_defaults,
)
from trio_msink.cli._main import _parser, command_properties, main
from trio_msink.cli._options import explicit_properties


def parse(*argv: str) -> Any:
    args = _parser().parse_args(["serve", *argv])
    args.explicit_properties = explicit_properties(args)
    return args


@pytest.mark.parametrize("fmt", ["mpegts", "h264", "auto"])
def test_video_joins_on_a_keyframe_and_is_bounded_in_time_and_buffers(fmt: str) -> None:
    props = format_defaults(fmt, ())
    assert props["sync_method"] == SyncMethod.LATEST_KEYFRAME
    assert props["recover_policy"] == RecoverPolicy.RESYNC_KEYFRAME
    assert props["unit_format"] == Format.TIME
    assert 0 < props["units_soft_max"] < props["units_max"]
    # streams without timestamps (H.264 without --fps) are bounded in buffers
    assert 0 < props["buffers_soft_max"] < props["buffers_max"]
    assert props["timeout"] > 0
    Sink(**props)  # a valid set


def test_raw_keeps_latest_and_is_bounded_in_bytes() -> None:
    props = format_defaults("raw", ())
    assert props["sync_method"] == SyncMethod.LATEST
    assert props["recover_policy"] == RecoverPolicy.NONE
    assert props["unit_format"] == Format.BYTES
    assert props["units_max"] == 4 * 1024 * 1024
    assert props["timeout"] > 0
    Sink(**props)


@pytest.mark.parametrize("fmt", ["mpegts", "h264", "raw"])
def test_every_format_sets_the_same_properties(fmt: str) -> None:
    """Switching formats (auto, once detected) leaves nothing of the previous one."""
    assert tuple(format_defaults(fmt, ())) == COMMAND_PROPERTIES


def test_properties_the_user_gave_are_left_out() -> None:
    props = format_defaults("mpegts", {"timeout", "sync_method"})
    assert "timeout" not in props and "sync_method" not in props
    assert props["recover_policy"] == RecoverPolicy.RESYNC_KEYFRAME


@pytest.mark.parametrize(
    ("given", "cleared"),
    [
        ("units_max", "units_soft_max"),
        ("units_soft_max", "units_max"),
        ("buffers_max", "buffers_soft_max"),
        ("buffers_soft_max", "buffers_max"),
    ],
)
def test_the_partner_of_a_limit_the_user_set_is_not_applied(given: str, cleared: str) -> None:
    assert format_defaults("mpegts", {given})[cleared] == -1


def test_another_unit_format_clears_the_unit_limits() -> None:
    props = format_defaults("mpegts", {"unit_format"})
    assert props["units_max"] == -1 and props["units_soft_max"] == -1
    assert props["buffers_max"] == 1024  # the buffer limits still apply


def test_an_unknown_format_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="avi"):
        format_defaults("avi", ())


@pytest.mark.parametrize(("first", "second"), [("mpegts", "raw"), ("raw", "h264")])
async def test_apply_switches_a_running_sink_between_formats(first: str, second: str) -> None:
    async with Sink(**format_defaults(first, ())) as sink:
        apply_properties(sink, format_defaults(second, ()))
        for name, value in format_defaults(second, ()).items():
            assert getattr(sink, name) == value


def test_the_initial_sink_gets_the_formats_defaults_and_the_flags() -> None:
    props = command_properties(parse("--format", "raw", "--timeout", "3"))
    assert props["unit_format"] == Format.BYTES and props["timeout"] == 3.0
    assert props["linger"] == 5.0  # the library's default, kept
    args = parse("--units-max", "2")
    assert args.explicit_properties == frozenset({"units_max"})
    props = command_properties(args)
    assert props["units_max"] == 2.0 and props["units_soft_max"] == -1
    Sink(**props)


def test_demo_adds_a_short_history_and_linger() -> None:
    args = _parser().parse_args(["demo", "--linger", "0"])
    args.explicit_properties = explicit_properties(args)
    args.source = "test"
    props = command_properties(args)
    assert props["time_min"] == 2.0 and props["linger"] == 0.0
    assert props["sync_method"] == SyncMethod.LATEST_KEYFRAME


def test_help_states_the_value_in_force_per_format() -> None:
    assert describe_default("units_max") == "10 s for mpegts/h264/auto, 4 MiB for raw"
    assert describe_default("timeout") == "10 s"
    assert describe_default("units_max", "raw") == "4 MiB"
    assert describe_default("linger") is None


# -- a client that never reads, on real sockets --------------------------------

def _never_reading_socket() -> trio.socket.SocketType:
    """A client socket with a small receive buffer, so that it fills fast."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def _connected_pair(nursery: trio.Nursery) -> tuple[trio.SocketStream, trio.SocketStream]:
    """(server side, client side) of a real TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    sock = _never_reading_socket()
    await sock.connect(listeners[0].socket.getsockname())
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return server, trio.SocketStream(sock)


@pytest.mark.parametrize("timestamps", [True, False], ids=["mpegts", "h264-without-fps"])
async def test_video_defaults_resync_then_remove_a_client_that_never_reads(
    mock_clock: MockClock, timestamps: bool
) -> None:
    """Pictures of 64 KiB, a keyframe every 25, on the mock clock: the
    stalled client never needs more than 5 s of stream (with timestamps, 25
    a second: 13 Mbit/s) or 512 buffers (without, 100 a second: an H.264
    elementary stream without --fps), is resynced on keyframes meanwhile,
    and is removed SLOW 10 s after its socket took nothing more; a client
    that reads is untouched."""
    mock_clock.autojump_threshold = 0
    removed: dict[object, ClientStatus] = {}
    dropped: dict[object, int] = {}

    def on_removed(stream: trio.abc.SendStream, status: ClientStatus) -> None:
        removed[stream] = status
        stats = sink.get_stats(stream)
        assert stats is not None
        dropped[stream] = stats.buffers_dropped

    props = format_defaults("mpegts" if timestamps else "h264", ())
    bound = 5 * 25 if timestamps else 512  # the soft limits, in buffers here
    with trio.fail_after(600):  # mock seconds
        async with trio.open_nursery() as nursery:
            stalled, _client = await _connected_pair(nursery)
            reader, reader_client = await _connected_pair(nursery)

            async def read_all() -> None:
                async for _ in reader_client:
                    pass

            nursery.start_soon(read_all)
            async with Sink(**props, linger=0, on_client_removed=on_removed) as sink:
                sink.add(stalled)
                sink.add(reader)
                start = trio.current_time()
                frame = 0
                while stalled not in removed:
                    keyframe = frame % 25 == 0
                    pts = frame / 25 if timestamps else None
                    await sink.send(Buffer(bytes(64 * 1024), pts=pts, delta_unit=not keyframe))
                    if not timestamps:  # a live source: pictures arrive 100 a second
                        await trio.sleep(1 / 100)
                    frame += 1
                    stats = sink.get_stats(stalled)
                    if stats is not None:
                        assert stats.lag_buffers <= bound + 1
                    assert sink.buffers_queued <= bound + 25 + 1
                    assert frame < 100 * 60, "not removed within 60 s"
                assert removed[stalled] == ClientStatus.SLOW
                assert dropped[stalled] > 0  # resynced on keyframes meanwhile
                assert trio.current_time() - start >= 10  # the timeout: no progress for 10 s
                assert reader not in removed
            nursery.cancel_scope.cancel()


async def test_raw_defaults_remove_a_client_that_never_reads_past_4_mib() -> None:
    """The command with default flags, raw bytes from stdin as fast as they
    come: the stalled client is removed SLOW long before its 10 s timeout."""
    with trio.fail_after(60):
        async with run_server(["serve", "-", "--format", "raw", "--tcp", "127.0.0.1:0"],
                              fronts=1, stdin=True) as server:
            sock = _never_reading_socket()
            await sock.connect(("127.0.0.1", server.port("tcp")))
            await server.wait_log(b"client added")
            stdin = server.process.stdin
            assert stdin is not None
            chunk = bytes(range(256)) * 4096  # 1 MiB
            with trio.fail_after(8):  # well inside the 10 s timeout
                while b"client removed (SLOW)" not in server.stderr:
                    await stdin.send_all(chunk)
            sock.close()


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_serve_help_shows_the_defaults_in_force(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("serve", capsys)
    assert "--units-max N hard limit in unit_format units (an extra, independent limit) " \
           "(default: 10 s for mpegts/h264/auto, 4 MiB for raw)" in text
    assert "(default: latest-keyframe for mpegts/h264/auto, latest for raw)" in text
    assert "over it → removed SLOW (default: 10 s)" in text  # --timeout
    assert "(-1 = no limit) (default: 5.0)" in text  # --linger: the library's own


def test_demo_help_shows_its_own_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("demo", capsys)
    assert "keep at least this many seconds of history (PTS span) (default: 2)" in text
    assert "(default: 10 s)" in text and "for raw" not in text
    assert "(default: 127.0.0.1:9000)" in text


def test_the_command_defaults_name_sink_properties_with_valid_values() -> None:
    declared = {p.name: p for p in Sink.properties()}
    for fmt in ("mpegts", "h264", "raw"):
        for name, value in format_defaults(fmt, ()).items():
            assert declared[name].check(value) == value
