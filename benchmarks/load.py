"""Load test: concurrent gradio_client sessions against the app on this machine.

    python -m benchmarks.load                              # starts app.py on a free port
    python -m benchmarks.load --sessions 20 --calls 10 --rounds 2 --model mnist
    python -m benchmarks.load --url http://127.0.0.1:7860/ --server-pid 1234

Each of ``--sessions`` clients (threads, one gradio_client session each) sends ``--calls``
requests to each of /reconstruct, /edit, /codebook and /interpolate, in a shuffled order,
and fetches every file an answer names, as the page does (a short or failed download counts
as a failure of its call); a round is all of them at once. Every session sends the same
images, so they get the same output files, which others may be producing meanwhile. After
each round it prints the failures, p50/p95 latency per endpoint and the server's resident
memory (RSS). Goal: 0 failures, RSS after round two
within 100 MB of round one. Only loopback addresses are accepted: this is a tool for your
own server, not anyone else's.

    python -m benchmarks.load --attackers 10               # fairness: a visitor beside attackers

With ``--attackers N``: a visitor's ``/reconstruct`` round trips (``--visitor-calls``, one
after another), first alone, then while N attacker clients each keep one ``/sample`` in
flight with the most expensive arguments the app allows (``--attack-model``'s prior, a
class, guidance 5, as many samples as SAMPLE_CODES lets through). Goal: p50 <= 1 s and
p95 <= 2 s beside the attackers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import random
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tools.serve import start_app, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("/reconstruct", "/edit", "/codebook", "/interpolate")
MAX_SESSIONS, MAX_CALLS, MAX_ROUNDS = 200, 1000, 20  # bounded loops


def check_loopback(url: str) -> str:
    """``url`` if its host is a loopback address (127.0.0.0/8, ::1, localhost); else ValueError."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"only loopback addresses may be load-tested, got {host!r}")
    return url


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux /proc), or None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        return kb / 1024
    except (OSError, StopIteration, ValueError):
        return None


@dataclass
class Round:
    """What one round measured: latencies (ms) per endpoint, failures as (endpoint, error)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rss_mb: float | None = None

    def report(self, name: str) -> str:
        lines = [
            f"{name}: {sum(map(len, self.latencies.values()))} calls in {self.seconds:.1f} s, "
            f"{len(self.failures)} failures, server RSS "
            + (f"{self.rss_mb:.0f} MB" if self.rss_mb is not None else "unknown")
        ]
        for ep in ENDPOINTS:
            t = self.latencies.get(ep, [])
            if t:
                lines.append(f"  {ep:<13} n={len(t):4d}  {percentiles(t)}")
        for ep, err in self.failures[:5]:
            lines.append(f"  failed {ep}: {err[:200]}")
        return "\n".join(lines)


def file_urls(result) -> list[str]:
    """The URLs of the files in an answer of gradio_client (``download_files=False``)."""
    if isinstance(result, dict):
        own = [result["url"]] if isinstance(result.get("url"), str) else []
        return own + [u for v in result.values() for u in file_urls(v)]
    if isinstance(result, (list, tuple)):
        return [u for v in result for u in file_urls(v)]
    return []


def fetch(http, result) -> None:
    """Download every file of ``result`` whole (httpx raises on a body shorter than its
    Content-Length)."""
    for u in file_urls(result):
        http.get(u).raise_for_status()


def session(url: str, model: str, image_a: str, image_b: str, calls: int, seed: int, out: Round):
    """One client session: ``calls`` requests to each endpoint, shuffled, each answer's files
    fetched."""
    import httpx
    from gradio_client import Client, handle_file

    client = Client(
        url, verbose=False, download_files=False, ssl_verify=ssl.create_default_context()
    )
    http = httpx.Client(timeout=120)
    grid = None
    plan = [ep for ep in ENDPOINTS for _ in range(calls)]
    random.Random(seed).shuffle(plan)
    for ep in plan:
        t = time.perf_counter()
        try:
            if ep == "/reconstruct" or grid is None:
                res = client.predict(handle_file(image_a), model, api_name="/reconstruct")
                grid = res[6]
                if ep != "/reconstruct":  # this session's first grid: not what was asked
                    t = time.perf_counter()
                else:
                    fetch(http, res)
            if ep == "/edit":
                fetch(http, client.predict(model, grid, api_name="/edit"))
            elif ep == "/codebook":
                fetch(http, client.predict(model, "2-D", grid, api_name="/codebook"))
            elif ep == "/interpolate":
                res = client.predict(
                    handle_file(image_a),
                    handle_file(image_b),
                    model,
                    8,
                    12,
                    "lerp",
                    True,
                    api_name="/interpolate",
                )
                fetch(http, res)
        except Exception as e:  # count it and go on: a load test reports failures
            out.failures.append((ep, f"{type(e).__name__}: {e}"))
            continue
        out.latencies[ep].append(1000 * (time.perf_counter() - t))
    http.close()


def run_round(
    url: str,
    model: str,
    image_a: str,
    image_b: str,
    sessions: int = 20,
    calls: int = 10,
    server_pid: int | None = None,
    seed: int = 0,
) -> Round:
    """All ``sessions`` at once; returns their latencies, failures and the server's RSS."""
    check_loopback(url)
    if not (1 <= sessions <= MAX_SESSIONS and 1 <= calls <= MAX_CALLS):
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS} and calls 1..{MAX_CALLS}")
    out = Round()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        jobs = [
            pool.submit(session, url, model, image_a, image_b, calls, seed + i, out)
            for i in range(sessions)
        ]
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # the session could not even connect
                out.failures.append(("connect", f"{type(e).__name__}: {e}"))
    out.seconds = time.perf_counter() - t0
    out.rss_mb = rss_mb(server_pid) if server_pid else None
    return out


def percentiles(ms: list[float]) -> str:
    """'p50 X ms  p95 Y ms' of a list of latencies (ms)."""
    t = sorted(ms)
    if not t:
        return "no calls"
    p95 = t[min(len(t) - 1, round(0.95 * (len(t) - 1)))]
    return f"p50 {statistics.median(t):7.0f} ms  p95 {p95:7.0f} ms"


def visitor(url: str, model: str, image: str, calls: int) -> tuple[list[float], int]:
    """``calls`` /reconstruct round trips, one after another -> (latencies in ms, failures)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, ssl_verify=ssl.create_default_context())
    times, failed = [], 0
    for _ in range(calls):
        t = time.perf_counter()
        try:
            client.predict(handle_file(image), model, api_name="/reconstruct")
        except Exception:  # a load test counts failures and goes on
            failed += 1
            continue
        times.append(1000 * (time.perf_counter() - t))
    return times, failed


def worst_sample(models_dir, model: str) -> list:
    """The most expensive /sample arguments the app allows for ``model``: a class, guidance
    5 (the prior runs twice), as many samples as settings.SAMPLE_CODES lets through."""
    import json

    from explorer.settings import MAX_SAMPLES, SAMPLE_CODES

    c = json.loads((Path(models_dir) / model / "prior.json").read_text())
    label = c["class_names"][0] if c.get("class_names") else "any"
    rows = 2 if label != "any" else 1
    n = min(MAX_SAMPLES, SAMPLE_CODES // (rows * c["height"] * c["width"]))
    return [model, label, n, 1.0, 0, 5.0, 0]


def attacker(url: str, args: list, stop: threading.Event, tally: Counter) -> None:
    """One client keeping one /sample with ``args`` in flight until ``stop``; counts answers
    ("done", or the refusal's class name) in ``tally``."""
    from gradio_client import Client

    client = Client(url, verbose=False, ssl_verify=ssl.create_default_context())
    while not stop.is_set():
        try:
            client.predict(*args, api_name="/sample")
            tally["done"] += 1
        except Exception as e:  # refused (429/503) or failed: try again, as an attacker would
            tally[type(e).__name__] += 1
            stop.wait(0.2)


def attack(url, models_dir, model, image, attackers, calls, attack_model, samples=None) -> str:
    """The visitor's /reconstruct latency alone, then beside ``attackers`` clients each
    keeping the worst allowed /sample of ``attack_model`` in flight (``samples``: that many
    instead) -> a report."""
    check_loopback(url)
    if not (1 <= attackers <= MAX_SESSIONS and 1 <= calls <= MAX_CALLS):
        raise ValueError(f"attackers must be 1..{MAX_SESSIONS} and calls 1..{MAX_CALLS}")
    args = worst_sample(models_dir, attack_model)
    args[2] = samples or args[2]
    visitor(url, model, image, 3)  # warm-up
    alone, failed_alone = visitor(url, model, image, calls)
    stop, tally = threading.Event(), Counter()
    threads = [
        threading.Thread(target=attacker, args=(url, args, stop, tally), daemon=True)
        for _ in range(attackers)
    ]
    for t in threads:
        t.start()
    time.sleep(3)  # every attacker connected and its first /sample queued
    try:
        beside, failed_beside = visitor(url, model, image, calls)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    return "\n".join(
        [
            f"visitor /reconstruct ({model}), {calls} calls one after another:",
            f"  alone:               {percentiles(alone)}  ({failed_alone} failed)",
            f"  beside {attackers:3d} attackers: {percentiles(beside)}  ({failed_beside} failed)",
            f"attackers: /sample {args[1:]} on {attack_model}; answers: {dict(tally)}",
        ]
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=None, help="a running app (loopback only); default: start one")
    p.add_argument("--server-pid", type=int, default=None, help="its process id, for RSS")
    p.add_argument("--models-dir", default=str(ROOT / "pretrained"))
    p.add_argument("--examples-dir", default=str(ROOT / "assets" / "examples"))
    p.add_argument("--model", default="mnist")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--calls", type=int, default=10, help="per endpoint and session")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--attackers",
        type=int,
        default=0,
        help="instead of rounds: a visitor's /reconstruct alone and beside N clients each "
        "keeping the most expensive allowed /sample in flight",
    )
    p.add_argument("--visitor-calls", type=int, default=40, help="with --attackers")
    p.add_argument("--attack-model", default="cifar10", help="with --attackers")
    p.add_argument(
        "--attack-samples", type=int, default=None, help="default: the most the app allows"
    )
    args = p.parse_args()
    if not 1 <= args.rounds <= MAX_ROUNDS:
        sys.exit(f"--rounds must be 1..{MAX_ROUNDS}")

    examples = sorted((Path(args.examples_dir) / args.model).glob("*.png"))
    if len(examples) < 2:
        sys.exit(f"need two example images in {Path(args.examples_dir) / args.model}")
    proc, url, pid = None, args.url, args.server_pid
    if url is None:
        proc, url = start_app(args.models_dir, args.examples_dir)
        pid = proc.pid
    url = check_loopback(url.rstrip("/") + "/")
    try:
        wait_until_up(url, proc)
        if args.attackers:
            print(
                attack(
                    url,
                    args.models_dir,
                    args.model,
                    str(examples[0]),
                    args.attackers,
                    args.visitor_calls,
                    args.attack_model,
                    args.attack_samples,
                )
            )
            return
        print(
            f"{args.sessions} sessions x {args.calls} calls x {len(ENDPOINTS)} endpoints "
            f"({args.model}), {args.rounds} rounds against {url}"
        )
        first = None
        for r in range(1, args.rounds + 1):
            res = run_round(
                url,
                args.model,
                str(examples[0]),
                str(examples[1]),
                args.sessions,
                args.calls,
                pid,
                seed=1000 * r,
            )
            print(res.report(f"round {r}"))
            first = first or res
        if first.rss_mb is not None and res.rss_mb is not None and args.rounds > 1:
            print(
                f"RSS change from round 1 to round {args.rounds}: "
                f"{res.rss_mb - first.rss_mb:+.0f} MB"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
