#!/usr/bin/env python3
"""HAProxy-hop latency: what an HAProxy in TCP mode (the load balancer of
docs/relay-tree.md) adds between a trio-msink server and its clients.

    python benchmarks/haproxy_latency.py            # 4 and 40 Mbit/s, 0 and 1 hop
    python benchmarks/haproxy_latency.py --quick

``relay_latency.py`` with each relay replaced by ``_haproxy_hop.py``: an
HAProxy in front of the hop before it (its configuration: the timeouts and
balancing of examples/deploy/haproxy.cfg, one server, no health check). The
rows "relays 1" are one HAProxy between the origin and the clients; "+ms/relay"
is what that hop adds. Every option of relay_latency.py applies.
"""

from __future__ import annotations

import shutil
import sys

import relay_latency
from _servers import BENCH_DIR

if __name__ == "__main__":
    if shutil.which("haproxy") is None:
        sys.exit("haproxy_latency.py: haproxy is not installed (Debian: haproxy)")
    relay_latency.RELAY_CMD = [sys.executable, str(BENCH_DIR / "_haproxy_hop.py"),
                               "{upstream}"]
    argv = sys.argv[1:]
    if not any(arg.startswith("--relays") for arg in argv):
        argv = ["--relays", "0,1", *argv]
    sys.exit(relay_latency.main(argv))
