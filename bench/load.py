"""Load test of `polycap serve`: N concurrent clients on loopback, micro-batching on vs off.

For each mode the script starts a real `polycap serve` process on a free loopback port, waits for
/readyz, warms up, then runs ``--clients`` concurrent clients posting the same photo for
``--duration`` seconds. It prints one JSON object: requests/s, images/s, latency percentiles, error
and rejection (503) counts and the server's peak RSS, per mode, and the on/off throughput ratio.

    python bench/load.py                                  # 16 clients, 15 s per mode, tiny model
    python bench/load.py --clients 32 --duration 30 --model polycap-base

Clients and server share the machine's cores, so absolute numbers are pessimistic; the on/off
ratio is the point. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Runs the real CLI; importing polycap.cli.serve registers the command even before commands.py does.
CLI = "import sys, polycap.cli.serve; from polycap.cli.app import main; sys.exit(main(sys.argv[1:]))"


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
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process (VmHWM, Linux); None where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
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


def start_server(args: argparse.Namespace, batching: bool, log: Any) -> tuple[subprocess.Popen, str]:
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
    with tempfile.TemporaryFile("w+") as log:
        proc, base = start_server(args, batching, log)
        try:
            async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
                await wait_ready(client, base, proc)
                await run_clients(client, base, args, image, args.warmup)
                result = await run_clients(client, base, args, image, args.duration)
            result["server_peak_rss_mb"] = peak_rss_mb(proc.pid)
            return result
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    image = args.image.read_bytes()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results = {}
    for mode in modes:
        results[f"batching_{mode}"] = asyncio.run(bench_mode(args, mode == "on", image))
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
