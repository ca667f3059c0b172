"""A local model folder loads and answers with no network at all."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

SCRIPT = textwrap.dedent("""
    import socket, sys
    try:
        socket.create_connection(("1.1.1.1", 80), timeout=3)
        print("NETWORK-REACHABLE"); sys.exit(3)
    except OSError:
        pass
    import gptoss_magics as gm
    gm.load(sys.argv[1])
    r = gm.complete("offline?", max_tokens=5)
    print("TOKENS", r.completion_tokens)
    gm.unload()
""")


def _cut_off_network() -> list[str]:
    """A command prefix that runs a process in a new network namespace with only a
    loopback device, or [] when this machine cannot make one."""
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh"] \
        if probe.returncode == 0 else []


def test_local_folder_loads_with_the_network_cut_off(tiny_path: Path, tmp_path: Path) -> None:
    prefix = _cut_off_network()
    if not prefix:
        pytest.skip("unshare -n is not permitted here; see test_sockets_blocked instead")
    script = tmp_path / "offline.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([*prefix, sys.executable, str(script), str(tiny_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "TOKENS 5" in proc.stdout
