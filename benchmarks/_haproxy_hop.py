#!/usr/bin/env python3
"""One HAProxy hop for ``haproxy_latency.py``: ``_haproxy_hop.py HOST:PORT``.

Listens on a free port of 127.0.0.1, prints ``tcp://127.0.0.1:PORT`` (the
line the benchmark's ``Server`` reads, as trio-msink prints it; connections
wait in the backlog meanwhile) and becomes ``haproxy`` in TCP mode in front
of HOST:PORT, which takes the listening socket over (``bind fd@N``). The
configuration has the timeouts and balancing of
``examples/deploy/haproxy.cfg`` (no health check: there is one server).
Being the same process, HAProxy is the one the benchmark measures and stops.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

HOST = "127.0.0.1"  # the only address the benchmark ever targets

CONFIG = """\
global
    nbthread 1
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout tunnel 2m
frontend viewers
    bind fd@{fd}
    default_backend edges
backend edges
    balance leastconn
    server edge {upstream}
"""


def main(upstream: str) -> None:
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    fd = listener.detach()
    os.set_inheritable(fd, True)
    # The file outlives this process's image: HAProxy reads it at start, and
    # it is left in /tmp (a few hundred bytes) as a record of the run.
    config = Path(tempfile.mkdtemp(prefix="haproxy-hop-")) / "haproxy.cfg"
    config.write_text(CONFIG.format(fd=fd, upstream=upstream))
    print(f"tcp://{HOST}:{port}", flush=True)
    os.execvp("haproxy", ["haproxy", "-db", "-f", str(config)])


if __name__ == "__main__":
    main(sys.argv[1])
