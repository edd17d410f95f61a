"""A relay tree across hosts, behind HAProxy (docs/relay-tree.md).

The "hosts" are processes on their own addresses inside a network namespace
made by the test (root on Linux): the origin ``trio-msink serve test`` on
127.0.0.10, three edge relays pulling it on 127.0.0.11-13, and HAProxy on
127.0.0.2 (TCP mode, health checks every 500 ms, ``fall 2 rise 2``) with
the configuration shipped in ``examples/deploy/haproxy.cfg``, its addresses
given through the environment variables it reads. The namespace's loopback
stands in for the WAN as far as the kernel allows: ``tc netem`` (delay and
loss) where the kernel has it; this machine's kernel has no netem, so there
the bandwidth is shaped with ``tbf`` only and neither delay nor loss is
emulated. The test prints which one it used.

1. Viewers connect to HAProxy and are spread over the edges.
2. One edge is killed: HAProxy takes it out of rotation within its check
   interval, its viewers reconnect and decode again within 2 s (ffmpeg),
   new viewers are served by the two others.
3. The origin is killed for 5 s and restarted on its address: every edge
   keeps its viewers, which decode again after it returns.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import _server
import pytest
import trio
from _relaying import decode
from _server import Running, need_tool, run_server

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "deploy" / "haproxy.cfg"
ORIGIN = "127.0.0.10"
EDGES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
BALANCER = "127.0.0.2"
TCP_PORT, HTTP_PORT = 9000, 8080
# The checks of examples/deploy/haproxy.cfg: every INTER seconds, FALL
# failures in a row take an edge out.
INTER, FALL = 0.5, 2
_KEYFRAMES = ["--sync-method", "latest-keyframe"]
# The WAN on the namespace's loopback: netem (10 ms each way, so 20 ms of
# round trip per hop, 0.1 % loss, 100 Mbit/s) where the kernel has it, else
# tbf (100 Mbit/s) alone.
_NETEM = ["netem", "delay", "10ms", "loss", "0.1%", "rate", "100mbit"]
_TBF = ["tbf", "rate", "100mbit", "burst", "512kb", "latency", "50ms"]
_CLONE_NEWNET = 0x40000000


def _unavailable(reason: str) -> None:
    """Skip, except in CI, where this test must run (so a missing
    privilege is a failure there)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; the relay tree across hosts must run in CI")
    pytest.skip(reason)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


@dataclass
class Namespace:
    """The test's network namespace: ``name`` for ``ip netns exec``, the
    ``qdisc`` shaping its loopback, and :meth:`connect` for the test's own
    connections into it."""

    name: str
    qdisc: str
    _inside: int
    _outside: int

    def socket(self) -> trio.socket.SocketType:
        """A TCP socket in the namespace. A socket belongs to the namespace
        of the thread that made it, so the thread enters the namespace just
        for that and comes back at once: a thread that Trio started while
        the test's thread was inside would stay inside, and later tests
        would start their processes there."""
        if _libc().setns(self._inside, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test's namespace")
        try:
            return trio.socket.socket()
        finally:
            if _libc().setns(self._outside, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace")

    async def connect(self, host: str, port: int) -> trio.SocketStream:
        sock = self.socket()
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh network namespace with the hosts' addresses on its loopback
    and the WAN shaping on it; deleted after."""
    if sys.platform != "linux":
        _unavailable("needs Linux network namespaces")
    if os.geteuid() != 0:
        _unavailable("needs root to create a network namespace (ip netns add)")
    ip = shutil.which("ip")
    tc = shutil.which("tc")
    if ip is None or tc is None:
        _unavailable("needs iproute2 (ip, tc)")
        raise AssertionError  # not reached: for the type checker
    name = f"trio-msink-{os.getpid()}"
    added = _run(ip, "netns", "add", name)
    if added.returncode != 0:
        _unavailable(f"ip netns add failed: {added.stderr.strip()}")
    outside = os.open("/proc/self/ns/net", os.O_RDONLY)
    inside_fd = -1
    try:
        inside = ["ip", "netns", "exec", name]
        for command in (["ip", "link", "set", "lo", "up"],
                        *(["ip", "addr", "add", f"{host}/8", "dev", "lo"]
                          for host in (BALANCER, ORIGIN, *EDGES))):
            result = _run(*inside, *command)
            assert result.returncode == 0, (command, result.stderr)
        qdisc = "netem"
        shaped = _run(*inside, "tc", "qdisc", "add", "dev", "lo", "root", *_NETEM)
        if shaped.returncode != 0:  # e.g. "Specified qdisc kind is unknown."
            qdisc = "tbf"
            shaped = _run(*inside, "tc", "qdisc", "add", "dev", "lo", "root", *_TBF)
            assert shaped.returncode == 0, shaped.stderr
        inside_fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        yield Namespace(name, qdisc, inside_fd, outside)
    finally:
        if inside_fd >= 0:
            os.close(inside_fd)
        os.close(outside)
        _run(ip, "netns", "delete", name)


@dataclass(eq=False)
class Session:
    """One connection of a viewer: when it was made and what arrived."""

    connected: float
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    ended: float | None = None

    def data(self, since: float = -1e9, until: float = 1e9) -> bytes:
        return b"".join(d for t, d in self.chunks if since < t <= until)


@dataclass(eq=False)
class Viewer:
    """A player behind HAProxy that reconnects at once when it is cut off."""

    sessions: list[Session] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def run(self, netns: Namespace, host: str, port: int) -> None:
        while True:
            stream = await netns.connect(host, port)
            session = Session(trio.current_time())
            self.sessions.append(session)
            async with stream:
                while data := await stream.receive_some(65536):
                    session.chunks.append((trio.current_time(), data))
                    self._wake()
            session.ended = trio.current_time()
            self._wake()

    def describe(self) -> list[tuple[float, float | None, int]]:
        """Each session's (connected, ended, bytes), for failure messages."""
        return [(round(s.connected, 2), s.ended and round(s.ended, 2), len(s.data()))
                for s in self.sessions]

    def _wake(self) -> None:
        self.arrived.set()
        self.arrived = trio.Event()

    @property
    def received(self) -> int:
        return sum(len(d) for s in self.sessions for _, d in s.chunks)

    async def wait_received(self, total: int) -> None:
        """Wait until ``total`` bytes have arrived in all (not ``total`` more)."""
        while self.received < total:
            await self.arrived.wait()

    async def next_data_after(self, when: float) -> float:
        while True:
            for session in self.sessions:
                for t, _ in session.chunks:
                    if t > when:
                        return t
            await self.arrived.wait()


async def haproxy_status(socket_path: str) -> dict[str, str]:
    """``{server: status}`` of backend ``edges_tcp``, from the runtime API's
    ``show stat`` (``UP``, ``DOWN``, or ``UP 1/2`` while a check fails)."""
    stream = await trio.open_unix_socket(socket_path)
    async with stream:
        await stream.send_all(b"show stat\n")
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
    header, *rows = data.decode().splitlines()
    names = header.lstrip("# ").split(",")
    status = {}
    for row in rows:
        fields = dict(zip(names, row.split(","), strict=False))
        if fields.get("pxname") == "edges_tcp" and fields.get("svname", "").startswith("edge"):
            status[fields["svname"]] = fields["status"]
    return status


async def wait_status(socket_path: str, server: str, wanted: str) -> None:
    """Poll the runtime API (it has no notifications) until ``server`` is ``wanted``."""
    while True:
        if (await haproxy_status(socket_path)).get(server) == wanted:
            return
        await trio.sleep(0.05)


async def edge_metrics(netns: Namespace, host: str) -> dict[tuple[str, str], float]:
    """The edge's /metrics: {(name, the value of its one label or ""): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    async with await netns.connect(host, HTTP_PORT) as stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: edge\r\n\r\n")
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
    body = bytes(data).partition(b"\r\n\r\n")[2].decode()
    return {(sample.name, next(iter(sample.labels.values()), "")): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples
            if len(sample.labels) <= 1}


async def tcp_clients(netns: Namespace, host: str) -> int:
    """The edge's viewers now, from its /metrics (``trio_msink_clients``)."""
    return int((await edge_metrics(netns, host))[("trio_msink_clients", "tcp")])


@asynccontextmanager
async def server(*args: str, fronts: int) -> AsyncIterator[Running]:
    async with run_server(["serve", *args, "--linger", "0"], fronts=fronts) as running:
        yield running


@asynccontextmanager
async def balancer(haproxy: str, netns: str, socket_path: str,
                   log: Path) -> AsyncIterator[trio.Process]:
    """HAProxy with examples/deploy/haproxy.cfg, the addresses from the
    environment; waits until its runtime API answers; stopped after."""
    env = {**os.environ, "HAPROXY_SOCKET": socket_path,
           "VIEWERS_TCP": f"{BALANCER}:{TCP_PORT}", "VIEWERS_HTTP": f"{BALANCER}:{HTTP_PORT}",
           **{f"EDGE{i}": host for i, host in enumerate(EDGES, 1)}}
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", netns, haproxy, "-db", "-f", str(CONFIG)],
            env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        while True:
            if process.returncode is not None:
                raise AssertionError(log.read_bytes().decode())  # noqa: ASYNC240
            try:
                await haproxy_status(socket_path)
                break
            except OSError:
                await trio.sleep(0.1)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def each_receives(viewers: list[Viewer], count: int) -> None:
    """Wait until every viewer has received ``count`` more bytes than now
    (they receive at the same time: the waits overlap)."""
    targets = [viewer.received + count for viewer in viewers]
    for viewer, target in zip(viewers, targets, strict=True):
        await viewer.wait_received(target)


async def kill(running: Running) -> None:
    running.process.kill()
    await running.process.wait()


async def test_haproxy_in_front_of_three_edges_survives_an_edge_and_the_origin(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="the origin's test stream needs PyAV")
    pytest.importorskip("prometheus_client", reason="the edges' /metrics needs prometheus-client")
    ffmpeg = need_tool("ffmpeg")
    haproxy = need_tool("haproxy")
    with namespace() as netns:
        print(f"WAN on the namespace's loopback: {netns.qdisc}"
              + (" (no netem in this kernel: no delay or loss emulated)"
                 if netns.qdisc == "tbf" else ""))
        # every trio-msink of this test runs inside the namespace
        monkeypatch.setattr(_server, "COMMAND", ["ip", "netns", "exec", netns.name,
                                                 *_server.COMMAND])
        origin_args = ["test", "--tcp", f"{ORIGIN}:{TCP_PORT}", *_KEYFRAMES]
        socket_path = str(tmp_path / "haproxy.sock")
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
                origin = await stack.enter_async_context(server(*origin_args, fronts=1))
                edges = [await stack.enter_async_context(server(
                    f"tcp://{ORIGIN}:{TCP_PORT}", "--tcp", f"{host}:{TCP_PORT}",
                    "--http", f"{host}:{HTTP_PORT}", *_KEYFRAMES, fronts=2))
                    for host in EDGES]
                live = b"source tcp://%s:%d: live" % (ORIGIN.encode(), TCP_PORT)
                for edge in edges:
                    await edge.wait_log(live)
                await stack.enter_async_context(
                    balancer(haproxy, netns.name, socket_path, tmp_path / "haproxy.log"))
                for name in ("edge1", "edge2", "edge3"):
                    await wait_status(socket_path, name, "UP")

                # 1. six viewers through HAProxy, spread over the three edges
                viewers = [Viewer() for _ in range(6)]
                for viewer in viewers:
                    nursery.start_soon(viewer.run, netns, BALANCER, TCP_PORT)
                await each_receives(viewers, 50_000)
                counts = [await tcp_clients(netns, host) for host in EDGES]
                assert sum(counts) == 6 and min(counts) >= 1, counts

                # 2. edge1 dies
                await kill(edges[0])
                killed = trio.current_time()
                await wait_status(socket_path, "edge1", "DOWN")
                out_after = trio.current_time() - killed
                # FALL failed checks INTER apart, plus up to one INTER until
                # the first, plus slack for a loaded machine
                assert out_after < INTER * (FALL + 1) + 1.5, out_after
                # the viewers of edge1 were cut off (HAProxy closes their side)
                for _ in range(100):
                    cut = [v for v in viewers if v.sessions[0].ended is not None]
                    if len(cut) >= counts[0]:
                        break
                    await trio.sleep(0.1)
                assert len(cut) == counts[0], (len(cut), counts)
                for viewer in cut:  # each reconnected through HAProxy
                    while len(viewer.sessions) < 2:
                        await viewer.arrived.wait()
                newcomers = [Viewer() for _ in range(3)]
                for viewer in newcomers:
                    nursery.start_soon(viewer.run, netns, BALANCER, TCP_PORT)
                viewers += newcomers
                await each_receives(viewers, 50_000)
                assert sum([await tcp_clients(netns, host) for host in EDGES[1:]]) == len(viewers)
                for viewer in cut:
                    # decodes again within 2 s of being cut off (what arrived
                    # by then holds a whole frame: it may end inside the next)
                    lost = viewer.sessions[0].ended
                    assert lost is not None
                    after = [s.data(until=lost + 2.0) for s in viewer.sessions[1:]]
                    assert any(decode(ffmpeg, data)[0] >= 1 for data in after if data), (
                        viewer.describe())
                sessions = [len(v.sessions) for v in viewers]
                shares = [await tcp_clients(netns, host) for host in EDGES[1:]]

                # 3. the origin is away for 5 s, then back on its address
                await kill(origin)
                await trio.sleep(5)
                await stack.enter_async_context(server(*origin_args, fronts=1))
                back = trio.current_time()
                with trio.fail_after(15):
                    for viewer in viewers:
                        await viewer.next_data_after(back)
                    await each_receives(viewers, 50_000)
                # every edge kept its viewers through the outage, and says so
                assert [len(v.sessions) for v in viewers] == sessions
                assert all(v.sessions[-1].ended is None for v in viewers)
                for host, share in zip(EDGES[1:], shares, strict=True):
                    numbers = await edge_metrics(netns, host)
                    assert numbers[("trio_msink_clients", "tcp")] == share
                    assert numbers[("trio_msink_source_reconnects_total", "")] >= 1
                    assert numbers[("trio_msink_source_state", "live")] == 1
                for edge in edges[1:]:
                    assert edge.process.returncode is None
                    assert b"Traceback" not in edge.stderr
                nursery.cancel_scope.cancel()

        for viewer in viewers:
            for i, session in enumerate(viewer.sessions):
                if i and not session.chunks and viewer in cut:
                    # An edge that is being killed may still accept a
                    # connection (HAProxy logs it "SD") and close it at once;
                    # the player's next try is served. Only right at the cut.
                    lost = viewer.sessions[0].ended
                    assert lost is not None and session.connected - lost < 1.0, (
                        viewer.describe())
                    continue
                frames, errors = decode(ffmpeg, session.data())
                # a session cut by the edge's death may end inside a frame
                assert frames >= 25 and (errors == "" or session.ended is not None), (
                    frames, errors, viewer.describe())
            after = viewer.sessions[-1].data(since=back)
            assert decode(ffmpeg, after)[0] >= 10
        print(f"edge out of rotation {out_after:.2f} s after it died")
