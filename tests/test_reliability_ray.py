"""A local Ray (``corpus_proximity.distributed.init_ray``): every server of the node listens on the
loopback only, and every Ray process ends when its parent is killed with ``kill -9``.

One real local Ray, started in a child process that imports Ray before ``init_ray`` (as
``text/ray_embed.py`` does) and runs a task, so the workers' servers exist too."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RAY = textwrap.dedent("""
    import time
    import ray
    from corpus_proximity.distributed import init_ray
    init_ray(None, num_cpus=2)
    @ray.remote
    def plus_one(x):
        return x + 1
    assert ray.get([plus_one.remote(i) for i in range(4)]) == [1, 2, 3, 4]
    print("ready", ray.nodes()[0]["NodeManagerAddress"], flush=True)
    time.sleep(300)
""")


def _loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:  # ::ffff:127.0.0.1 on a v6 socket
        a = a.ipv4_mapped
    return a.is_loopback


def _servers(p) -> list[tuple[str, str, int]]:
    """(process, address, port) of every listening TCP socket and every unconnected UDP socket."""
    import psutil

    out = []
    for c in p.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr):  # 2: SOCK_DGRAM
            out.append((" ".join(p.cmdline())[:60], c.laddr.ip, c.laddr.port))
    return out


def test_local_ray_listens_on_loopback_only_and_ends_with_a_killed_parent():
    import psutil

    pytest.importorskip("ray")
    p = subprocess.Popen([sys.executable, "-c", RAY], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().split() == ["ready", "127.0.0.1"]
        parent = psutil.Process(p.pid)
        kids = [k for k in parent.children(recursive=True) if "corpus_proximity.children" not in " ".join(k.cmdline())]
        assert any("gcs_server" in " ".join(k.cmdline()) for k in kids) and any("raylet" in k.name() for k in kids)
        servers = [s for proc in [parent, *kids] for s in _servers(proc)]
        assert len(servers) >= 4  # the driver's core worker, the GCS, the raylet's two, the runtime-env agent...
        assert [s for s in servers if not _loopback(s[1])] == []
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        _, alive = psutil.wait_procs(kids, timeout=20)
        assert not alive, [a.cmdline()[:3] for a in alive]
    finally:
        if p.poll() is None:
            p.kill()


def test_loopback_check_can_fail():
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("::ffff:127.0.0.1")
    assert not _loopback("0.0.0.0") and not _loopback("::") and not _loopback("192.0.2.2")
