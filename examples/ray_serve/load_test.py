"""Load test: the locked deployment against the same deployment serving the plain model, over HTTP.

Starts a local Ray cluster (or joins ``--address``), locks a bundled model for a fresh identity
made in a temporary folder (removed at exit), and deploys three apps side by side with the same
deployment class, replicas, CPUs and one onnxruntime thread each: ``/plain``, ``/locked`` and
``/plain_again``, in that order. The second plain app is an A/A control: how far two identical
deployments differ here is the noise floor any locked/plain difference must be read against. It
checks that all three answer bit-identically to a local session on the original, warms them up,
then runs ``--rounds`` short rounds, rotating which app goes first (on a shared machine, load
from elsewhere drifts over seconds: short rotated rounds cancel it best); each round sends
``--requests`` POSTs to each app from ``--concurrency`` keep-alive client threads. Writes
requests/s and latency p50/p95 per round and their medians, the locked/plain and control ratios,
and the replicas' start-up time to reports/ray_serve.json. It never asserts a time.

    python examples/ray_serve/load_test.py [--model digits_cnn] [--rounds 16] [--requests 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import ray
import requests
from ray import serve

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's onnxlock

import serve_locked  # noqa: E402

import onnxlock  # noqa: E402
from onnxlock.bundled import bundled_path  # noqa: E402
from onnxlock.fileio import atomic_write_bytes  # noqa: E402
APPS = ("plain", "locked", "plain_again")  # deployed in this order


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


class Client:
    """POSTs prepared JSON bodies from a pool of threads, one keep-alive session per thread."""

    def __init__(self, concurrency: int):
        self.pool = ThreadPoolExecutor(concurrency)
        self.local = threading.local()

    def post(self, url: str, body: bytes) -> float:
        session = getattr(self.local, "session", None) or self._session()
        start = time.perf_counter()
        response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        seconds = time.perf_counter() - start
        response.raise_for_status()
        return seconds

    def _session(self) -> requests.Session:
        self.local.session = requests.Session()
        return self.local.session

    def run(self, url: str, bodies: list[bytes], count: int) -> dict:
        """Send ``count`` requests cycling through ``bodies``: requests/s and latency p50/p95 (ms)."""
        start = time.perf_counter()
        latencies = list(self.pool.map(lambda i: self.post(url, bodies[i % len(bodies)]), range(count)))
        wall = time.perf_counter() - start
        return {"requests_per_s": count / wall, "p50_ms": 1e3 * percentile(latencies, 50),
                "p95_ms": 1e3 * percentile(latencies, 95), "seconds": wall}


def check_identical(url: str, original: ort.InferenceSession, pixels: np.ndarray) -> None:
    feeds = {"pixels": pixels}
    expected = dict(zip([o.name for o in original.get_outputs()], original.run(None, feeds)))
    answer = requests.post(url, json=serve_locked.request_body(feeds), timeout=60)
    answer.raise_for_status()
    got = serve_locked.decode_outputs(answer.json(), expected)
    if any(got[name].tobytes() != expected[name].tobytes() for name in expected):
        raise SystemExit(f"{url} does not answer like the original model")


def deploy_all(model: Path, locked: onnxlock.LockedModel, identity: bytes, args) -> dict[str, float]:
    """Deploy the three apps; return each one's start-up seconds (``serve.run`` until its replicas run)."""
    plain = model.read_bytes()
    options = {"replicas": args.replicas, "cpus": args.replica_cpus}
    return {"plain": serve_locked.deploy("plain", plain, **options),
            "locked": serve_locked.deploy("locked", locked.model, locked.key, identity, **options),
            "plain_again": serve_locked.deploy("plain_again", plain, **options)}


def measure(client: Client, urls: dict[str, str], bodies: list[bytes], rounds: int, count: int) -> list[dict]:
    """``rounds`` rounds of ``count`` requests per app, rotating which app goes first."""
    results = []
    for index in range(rounds):
        order = APPS[index % len(APPS):] + APPS[:index % len(APPS)]
        result = {"order": list(order)}
        for app in order:
            result[app] = client.run(urls[app], bodies, count)
            print(f"round {index + 1:2d} {app:11s} {result[app]['requests_per_s']:7.1f} req/s  "
                  f"p50 {result[app]['p50_ms']:6.2f} ms  p95 {result[app]['p95_ms']:6.2f} ms", flush=True)
        results.append(result)
    return results


def ratios(rounds: list[dict], medians: dict[str, dict]) -> dict:
    """locked over plain (the two plain apps' mean) and the A/A control plain_again over plain:
    the median of the per-round ratios, and the ratio of the median throughputs."""
    def rps(where: dict, app: str) -> float:
        return where[app]["requests_per_s"]

    def plain(where: dict) -> float:
        return (rps(where, "plain") + rps(where, "plain_again")) / 2

    return {"locked_over_plain": {"median_of_rounds": statistics.median(rps(r, "locked") / plain(r) for r in rounds),
                                  "of_medians": rps(medians, "locked") / plain(medians)},
            "control_plain_again_over_plain": {
                "median_of_rounds": statistics.median(rps(r, "plain_again") / rps(r, "plain") for r in rounds),
                "of_medians": rps(medians, "plain_again") / rps(medians, "plain")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn", help="a bundled model name or a path (default digits_cnn)")
    parser.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--port", type=int, default=8000, help="Serve HTTP port when this starts Serve")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--replica-cpus", type=float, default=0.25,
                        help="logical CPUs per replica (default 0.25: the three apps fit a 2-CPU machine)")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="measured requests per app per round")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("-o", "--output", default=str(ROOT / "reports" / "ray_serve.json"))
    args = parser.parse_args(argv)

    model = Path(args.model) if Path(args.model).is_file() else bundled_path(args.model)
    with np.load(bundled_path("digits_test.npz")) as data:
        pixels = data["pixels"]
    batches = [pixels[i:i + args.batch] for i in range(0, len(pixels) - args.batch + 1, args.batch)]
    bodies = [json.dumps(serve_locked.request_body({"pixels": b})).encode() for b in batches]
    with tempfile.TemporaryDirectory() as folder:  # a throwaway identity, never in the working dir
        onnxlock.keygen(Path(folder) / "device")
        locked = onnxlock.lock_model(model, recipients=[Path(folder) / "device.pub"])
        identity = (Path(folder) / "device").read_bytes()
    load_average = os.getloadavg()
    ray.init(address=args.address or "local", runtime_env=serve_locked.runtime_env(),
             include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        startup = deploy_all(model, locked, identity, args)
        del identity
        urls = {app: f"http://127.0.0.1:{args.port}/{app}" for app in APPS}
        original = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        for url in urls.values():
            check_identical(url, original, pixels[:64])
        client = Client(args.concurrency)
        for url in urls.values():
            client.run(url, bodies, 20 * args.concurrency)  # warm-up: connections, replica caches
        rounds = measure(client, urls, bodies, args.rounds, args.requests)
    finally:
        serve.shutdown()
        ray.shutdown()

    medians = {app: {metric: statistics.median(r[app][metric] for r in rounds)
                     for metric in ("requests_per_s", "p50_ms", "p95_ms")} for app in APPS}
    report = {
        "what": "Ray Serve over HTTP (JSON in, JSON out): locked model restored by onnxlock.load_session "
                "in each replica vs the same deployment serving the plain model, with an A/A control",
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average,
                    "python": platform.python_version(), "ray": ray.__version__,
                    "onnxruntime": ort.__version__, "client_on_same_machine": True},
        "setup": {"model": model.name, "method": locked.report["method"], "replicas": args.replicas,
                  "replica_cpus": args.replica_cpus, "onnxruntime_threads_per_replica": 1,
                  "images_per_request": args.batch, "client_threads": args.concurrency,
                  "requests_per_round": args.requests, "rounds": args.rounds},
        "bit_identical_to_original": True,
        "replica_startup_s": startup,
        "median": medians,
        **ratios(rounds, medians),
        "rounds": rounds,
    }
    atomic_write_bytes(args.output, (json.dumps(report, indent=2) + "\n").encode(), mode=0o644)
    ratio, control = report["locked_over_plain"], report["control_plain_again_over_plain"]
    print(f"locked/plain {ratio['median_of_rounds']:.3f} (median of rounds), {ratio['of_medians']:.3f} (of medians); "
          f"A/A control {control['median_of_rounds']:.3f}, {control['of_medians']:.3f}; start-up s "
          + ", ".join(f"{app} {seconds:.1f}" for app, seconds in startup.items()) + f"; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
