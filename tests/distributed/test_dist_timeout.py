"""init_from_env's collective timeout: a rank whose peer never joins a collective fails
with a timeout error instead of waiting (gloo's own default is 30 minutes)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from atom_plugin import distributed

CHILD = textwrap.dedent("""
    import os, sys, time
    import torch
    import torch.distributed as dist
    from atom_plugin import distributed
    assert distributed.init_from_env(backend="gloo")
    if dist.get_rank() == 1:
        time.sleep(120)  # a frozen peer: alive, never joins the collective
        sys.exit(0)
    t0 = time.time()
    try:
        dist.all_reduce(torch.ones(1))
        print("NO TIMEOUT")
    except Exception as err:  # gloo raises RuntimeError / DistBackendError
        text = str(err).lower()
        print("TIMEOUT" if "timed out" in text or "timeout" in text else "OTHER", repr(err)[:300])
        print("SECONDS", round(time.time() - t0, 1))
    sys.stdout.flush()
    os._exit(0)  # the process group cannot be torn down cleanly with a frozen peer
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_and_configured_timeout(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.collective_timeout() == distributed.DEFAULT_TIMEOUT_S == 600.0
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42.5")
    assert distributed.collective_timeout() == 42.5
    assert distributed.collective_timeout(7) == 7.0  # the argument wins
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "0")
    with pytest.raises(ValueError, match="ATOM_PLUGIN_DIST_TIMEOUT"):
        distributed.collective_timeout()


def test_frozen_peer_times_out_instead_of_hanging():
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           distributed.TIMEOUT_ENV: "4"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        out, err = procs[0].communicate(timeout=240)  # 240 s: far below gloo's 30-minute default
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "TIMEOUT" in out, (out, err[-2000:])
