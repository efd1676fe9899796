"""Start ``python app.py`` on a free loopback port and wait for it: for the benchmarks and
tools that measure or drive the app as its users meet it, in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def start_app(models_dir, examples_dir, port: int | None = None, *, quiet: bool = True):
    """-> (process, url): ``python app.py`` serving ``models_dir`` on 127.0.0.1:``port`` (a
    free one by default); its output goes nowhere when ``quiet``."""
    port = port or free_port()
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--models-dir", str(models_dir), "--examples-dir", str(examples_dir)]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, stdout=out, stderr=out), f"http://127.0.0.1:{port}/"


def wait_until_up(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Return once ``url`` serves the app's config; RuntimeError if ``proc`` exits first,
    TimeoutError after ``timeout`` seconds."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
