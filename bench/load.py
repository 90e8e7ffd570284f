"""Load test of `polycap serve`: N concurrent clients on loopback, micro-batching on vs off, and
large JSON bodies.

For each batching mode the script starts a real `polycap serve` process on a free loopback port,
waits for /readyz, warms up, then runs ``--clients`` concurrent clients posting the same photo for
``--duration`` seconds: requests/s, images/s, latency percentiles, error and rejection (503)
counts and the server's peak RSS, per mode, and the on/off throughput ratio.

The large-body scenario starts one more server and has ``--large-clients`` clients post a
``--large-mb`` MB JSON body (one base64 noise PNG) for ``--large-duration`` seconds while a probe
asks /healthz every 50 ms: /healthz latency (does parsing block the event loop?), the server's RSS
before, at peak and ``--idle-s`` seconds after the load (is memory given back?), and outcomes.

    python bench/load.py                                  # 16 clients, 15 s per mode, tiny model
    python bench/load.py --clients 32 --duration 30 --model polycap-base
    python bench/load.py --scenarios large-body --large-clients 32

It prints one JSON object. Clients and server share the machine's cores, so absolute numbers are
pessimistic; the on/off ratio and the /healthz latency under load are the point. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Runs the real CLI (`polycap serve ...`), as the console script does.
CLI = "import sys; from polycap.cli import main; sys.exit(main(sys.argv[1:]))"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--duration", type=float, default=15.0, help="seconds of load per mode")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per mode (not measured)")
    p.add_argument("--model", default="polycap-tiny-random")
    p.add_argument("--image", type=Path, default=REPO / "examples" / "cat.jpg")
    p.add_argument("--lang", default="en", help="language(s) per request, comma-separated")
    p.add_argument("--modes", default="on,off", help="batching modes to run: on,off")
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-threads", type=int, default=None, help="passed to polycap serve --torch-threads")
    p.add_argument("--scenarios", default="batching,large-body", help="which to run: batching, large-body")
    p.add_argument("--large-clients", type=int, default=16, help="clients posting large JSON bodies")
    p.add_argument("--large-mb", type=float, default=19.0, help="size of each large JSON body, MB")
    p.add_argument("--large-duration", type=float, default=10.0, help="seconds of large-body load")
    p.add_argument("--idle-s", type=float, default=5.0, help="seconds idle after the large-body load before RSS")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process (VmHWM, Linux); None where /proc is not available."""
    return _proc_status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process now (VmRSS, Linux); None where /proc is not available."""
    return _proc_status_mb(pid, "VmRSS:")


def _proc_status_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[k], 1)


@contextlib.contextmanager
def serving(args: argparse.Namespace, batching: bool) -> Iterator[tuple[subprocess.Popen, str]]:
    """``start_server``, stopped on exit; if the body fails, the tail of the server's output goes to
    stderr."""
    with tempfile.TemporaryFile("w+") as log:
        proc, base = start_server(args, batching, log)
        try:
            yield proc, base
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_server(args: argparse.Namespace, batching: bool, log: Any) -> tuple[subprocess.Popen, str]:
    """A real `polycap serve` process on a free loopback port (its output goes to ``log``)."""
    port = free_port()
    argv = [sys.executable, "-c", CLI, "serve", "--model", args.model, "--port", str(port), "--device", args.device]
    argv += ["--batching" if batching else "--no-batching", "--batch-window-ms", str(args.batch_window_ms)]
    argv += ["--max-batch-size", str(args.max_batch_size), "--max-queue", str(max(64, args.clients * 2))]
    if args.torch_threads:
        argv += ["--torch-threads", str(args.torch_threads)]
    env = {k: v for k, v in os.environ.items() if k != "POLYCAP_API_KEY"}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(client: Any, base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if (await client.get(f"{base}/readyz")).status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become ready")


async def run_clients(client: Any, base: str, args: argparse.Namespace, image: bytes, seconds: float) -> dict:
    """``args.clients`` loops posting the photo until ``seconds`` pass; latencies of successes in ms."""
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "rejected_503": 0, "images": 0}
    stop = time.monotonic() + seconds

    async def one_client() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    f"{base}/v1/captions", files={"image": ("cat.jpg", image, "image/jpeg")}, data={"lang": args.lang}
                )
            except Exception:  # noqa: BLE001 - counted, the load goes on
                counts["errors"] += 1
                continue
            if r.status_code == 200:
                counts["ok"] += 1
                counts["images"] += 1
                latencies.append((time.perf_counter() - t0) * 1000)
            elif r.status_code == 503:
                counts["rejected_503"] += 1
            else:
                counts["errors"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(args.clients)))
    elapsed = time.perf_counter() - t0
    return {
        "requests": counts["ok"],
        "requests_per_s": round(counts["ok"] / elapsed, 2),
        "images_per_s": round(counts["images"] / elapsed, 2),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "mean": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "errors": counts["errors"],
        "rejected_503": counts["rejected_503"],
        "seconds": round(elapsed, 2),
    }


async def bench_mode(args: argparse.Namespace, batching: bool, image: bytes) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    with serving(args, batching) as (proc, base):
        async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
            await wait_ready(client, base, proc)
            await run_clients(client, base, args, image, args.warmup)
            result = await run_clients(client, base, args, image, args.duration)
        result["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
        return result


def large_body(megabytes: float) -> bytes:
    """A JSON caption request of about ``megabytes`` MB: one PNG of noise (incompressible), base64."""
    import numpy as np
    from PIL import Image

    side = int((megabytes * 1e6 * 0.75 / 3) ** 0.5)  # base64 is 4/3 of the PNG, the PNG ~3 bytes a pixel
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return json.dumps({"images": [{"data": base64.b64encode(buf.getvalue()).decode(), "name": "noise.png"}]}).encode()


async def probe_health(client: Any, base: str, stop: asyncio.Event, every_s: float = 0.05) -> list[float]:
    """GET /healthz every ``every_s`` until ``stop``; latencies in ms (a failed probe counts as its time)."""
    latencies = []
    while not stop.is_set():
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):  # a timeout is a (very) slow answer
            await client.get(f"{base}/healthz")
        latencies.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(every_s)
    return latencies


async def sample_rss(pid: int, stop: asyncio.Event, every_s: float = 0.1) -> float | None:
    """The largest VmRSS seen until ``stop`` (VmHWM also counts model loading)."""
    peak = None
    while not stop.is_set():
        now = rss_mb(pid)
        if now is not None:
            peak = max(peak or 0.0, now)
        await asyncio.sleep(every_s)
    return peak


async def post_large(client: Any, base: str, body: bytes, stop_at: float, counts: dict, latencies: list) -> None:
    headers = {"content-type": "application/json"}
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        try:
            r = await client.post(f"{base}/v1/captions", content=body, headers=headers)
        except Exception:  # noqa: BLE001 - counted, the load goes on
            counts["errors"] += 1
            continue
        key = {200: "ok", 503: "rejected_503"}.get(r.status_code, "errors")
        counts[key] += 1
        if r.status_code == 200:
            latencies.append((time.perf_counter() - t0) * 1000)


async def bench_large_bodies(args: argparse.Namespace) -> dict:
    """Large JSON bodies from many clients: /healthz latency meanwhile, RSS before, at peak, idle after."""
    import httpx

    body = large_body(args.large_mb)
    n = args.large_clients
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    with serving(args, True) as (proc, base):
        async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
            await wait_ready(client, base, proc)
            await client.post(f"{base}/v1/captions", content=body, headers={"content-type": "application/json"})
            await asyncio.sleep(1.0)
            before = rss_mb(proc.pid)
            stop = asyncio.Event()
            health = asyncio.ensure_future(probe_health(client, base, stop))
            rss = asyncio.ensure_future(sample_rss(proc.pid, stop))
            counts = {"ok": 0, "errors": 0, "rejected_503": 0}
            latencies: list[float] = []
            t0 = time.perf_counter()
            stop_at = time.monotonic() + args.large_duration
            await asyncio.gather(*(post_large(client, base, body, stop_at, counts, latencies) for _ in range(n)))
            elapsed = time.perf_counter() - t0
            stop.set()
            health_ms, peak = await health, await rss
            await asyncio.sleep(args.idle_s)
            idle = rss_mb(proc.pid)
            idle_health = await probe_health_once(client, base)
        return {
            "clients": n,
            "body_mb": round(len(body) / 1e6, 2),
            "seconds": round(elapsed, 2),
            "requests": counts["ok"],
            "requests_per_s": round(counts["ok"] / elapsed, 2),
            "errors": counts["errors"],
            "rejected_503": counts["rejected_503"],
            "request_latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
            "healthz_ms": {
                "probes": len(health_ms),
                "p50": percentile(health_ms, 50),
                "p95": percentile(health_ms, 95),
                "p99": percentile(health_ms, 99),
                "max": round(max(health_ms), 1) if health_ms else None,
                "idle_after": idle_health,
            },
            "server_rss_mb": {"before": before, "peak": peak, f"idle_{args.idle_s:g}s_after": idle},
            "server_peak_rss_mb": peak_rss_mb(proc.pid),
        }


async def probe_health_once(client: Any, base: str) -> float:
    t0 = time.perf_counter()
    await client.get(f"{base}/healthz")
    return round((time.perf_counter() - t0) * 1000, 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    image = args.image.read_bytes()
    scenarios = {x.strip() for x in args.scenarios.split(",") if x.strip()}
    unknown = scenarios - {"batching", "large-body"}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: batching, large-body")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if "batching" in scenarios else []
    results = {}
    for mode in modes:
        results[f"batching_{mode}"] = asyncio.run(bench_mode(args, mode == "on", image))
    if "large-body" in scenarios:
        results["large_body"] = asyncio.run(bench_large_bodies(args))
    out: dict[str, Any] = {
        "benchmark": "serve-load",
        "command": "python bench/load.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model,
        "clients": args.clients,
        "duration_s": args.duration,
        "image": args.image.name,
        "lang": args.lang,
        "batch_window_ms": args.batch_window_ms,
        "max_batch_size": args.max_batch_size,
        "torch_threads": args.torch_threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
    }
    on, off = results.get("batching_on"), results.get("batching_off")
    if on and off and off["requests_per_s"]:
        out["throughput_ratio_on_vs_off"] = round(on["requests_per_s"] / off["requests_per_s"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
