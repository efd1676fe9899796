"""Client round trip of /reconstruct through gradio_client, with and without downloading the
outputs, against a freshly started ``python app.py`` on a free loopback port.

    python -m benchmarks.roundtrip                       # the shipped models, cifar10 32x32
    python -m benchmarks.roundtrip --models-dir /tmp/m --examples-dir /tmp/ex --repeat 50

Each call uploads the image again (as a client with a new picture would). Prints the median
and 90th percentile in ms over ``--repeat`` warm calls, and the handler's own time for
comparison. Targets (2 CPU cores): <= 120 ms without downloads, <= 200 ms with them.

Where the time goes. The server spends ~2-3x the handler's time on an event (Gradio's pre-
and postprocessing: three PNGs encoded, files hashed and copied into its cache), and the
queue adds ~1 ms. Most of a round trip is the client's: gradio_client opens a new httpx
connection for every upload, queue join and download, and httpx builds a new SSL context
(loading the CA bundle: ~25 ms idle, ~60 ms on a busy 2-core machine) for each, even for
plain http://; it also polls for the queue's messages every 50 ms. A client that passes one
SSL context (``Client(url, ssl_verify=ssl.create_default_context())``, verification kept)
skips the rebuilds: both rows are printed.

The Reconstruct tab's codec panel (the .vqz file, JPEG and WebP at its size) is an event of
its own, /compress, that the page sends after /reconstruct has answered: it adds nothing to
/reconstruct's round trip. For a model with a prior its own round trip is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.serve import start_app, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent


def connect(url: str, proc: subprocess.Popen, timeout: float = 120, **kw):
    from gradio_client import Client

    wait_until_up(url, proc, timeout)
    return Client(url, verbose=False, **kw)


def ssl_context():
    """One SSL context for all of a client's requests (certificates still verified)."""
    import ssl

    return ssl.create_default_context()


def timed(fn, repeat: int) -> list[float]:
    for _ in range(3):  # warm-up: first calls pay for imports, kernel selection, caches
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return times


def summary(times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) >= 2 else times[0]
    return f"median {statistics.median(times):6.1f} ms, p90 {p90:6.1f} ms"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", default=str(ROOT / "pretrained"))
    p.add_argument("--examples-dir", default=str(ROOT / "assets" / "examples"))
    p.add_argument("--model", default=None, help="default: cifar10 if present, else the first")
    p.add_argument("--image", default=None, help="default: the model's first example")
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args()

    from gradio_client import handle_file

    import explorer

    explorer.configure_process()  # the app's torch threads and pixel limit

    h = explorer.Handlers(args.models_dir, args.examples_dir)
    names = h.models.names()
    if not names:
        sys.exit(f"no models in {args.models_dir}")
    model = args.model or ("cifar10" if "cifar10" in names else names[0])
    image = args.image or h.models.get(model).examples[0]
    handler = timed(lambda: h.reconstruct.image(image, model, announce=False), args.repeat)

    proc, url = start_app(args.models_dir, args.examples_dir)
    try:
        rows = []
        with tempfile.TemporaryDirectory() as downloads:
            for ssl_note, ssl_verify in (("default", True), ("shared SSL", ssl_context())):
                for dl_note, dl in (("no downloads", False), ("with downloads", downloads)):
                    client = connect(url, proc, download_files=dl, ssl_verify=ssl_verify)

                    def call(client=client):
                        client.predict(handle_file(image), model, api_name="/reconstruct")

                    rows.append(
                        (f"gradio_client ({ssl_note}), {dl_note}", timed(call, args.repeat))
                    )
            if h.codec.compress(image, model).vqz is not None:  # the model has a prior
                client = connect(url, proc, download_files=False, ssl_verify=ssl_context())

                def compress(client=client):
                    client.predict(handle_file(image), model, api_name="/compress")

                rows.append(("/compress (shared SSL), no downloads", timed(compress, args.repeat)))
    finally:
        stop(proc)
    print(f"/reconstruct of {Path(image).name} ({model}), {args.repeat} warm calls each:")
    print(f"  {'handler alone (in-process)':<42} {summary(handler)}")
    for note, times in rows:
        print(f"  {note:<42} {summary(times)}")


if __name__ == "__main__":
    main()
