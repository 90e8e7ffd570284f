"""The REST server against hostile or unlucky clients: slow image hosts, requests that outlive their
timeout or their client, over-budget work, text that is not Unicode, too many files, large bodies,
credentials in URLs, giant image headers.

Everything runs on loopback with bounded time: the slow image host is a real socket server on
127.0.0.2 that trickles one byte at a time and stops by itself; "slow" captioners are the tiny
random model with a sleep before each model call.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'polycap[serve]'")
pytest.importorskip("httpx", reason="the serve extra is not installed: pip install 'polycap[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from polycap.backends.base import Captioner  # noqa: E402
from polycap.net import FetchError, fetch_image, fetch_url, is_public, redact_url  # noqa: E402
from polycap.serve import ServeSettings, create_app  # noqa: E402
from polycap.types import Caption  # noqa: E402


# ---- helpers --------------------------------------------------------------------------------
def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (signature, IHDR, IEND): PIL reads the size, no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@contextmanager
def serving(settings: ServeSettings | None = None, **kwargs) -> Iterator[TestClient]:
    with TestClient(create_app(settings or ServeSettings(), **kwargs)) as client:
        yield client


def upload(client: TestClient, *images: tuple[str, bytes], **fields):
    files = [("image", (name, data, "application/octet-stream")) for name, data in images]
    return client.post("/v1/captions", files=files, data=fields)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


@pytest.fixture(scope="module")
def tiny() -> Iterator[Captioner]:
    import torch

    import polycap

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield polycap.load("polycap-tiny-random", device="cpu")
    torch.set_num_threads(threads)


class SlowCaptioner(Captioner):
    """The tiny random model, slowed down: every model call sleeps ``delay`` s first and is recorded."""

    def __init__(self, inner: Captioner, delay: float):
        super().__init__("slow-tiny", inner.capabilities)
        self.inner, self.delay = inner, delay
        self.calls: list[tuple[int, tuple[int, int]]] = []  # (images in the call, size of the first)

    def caption_batch(self, images: Sequence[Image.Image], options) -> list[Caption]:
        self.calls.append((len(images), images[0].size))
        time.sleep(self.delay)
        return self.inner.caption_batch(images, options)

    def calls_of(self, size: tuple[int, int]) -> int:
        return sum(1 for _, first in self.calls if first == size)


def loopback2_allowed(ip) -> bool:
    """Test policy: 127.0.0.2 stands in for a public host; everything else gets the real policy."""
    return str(ip) == "127.0.0.2" or is_public(ip)


@contextmanager
def trickle_server(interval_s: float = 0.2, lifetime_s: float = 8.0) -> Iterator[dict]:
    """A real HTTP server on 127.0.0.2 that answers every GET with 200 and then one body byte per
    ``interval_s``. It stops by itself after ``lifetime_s`` (or when the block exits)."""
    listener = socket.create_server(("127.0.0.2", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    end = time.monotonic() + lifetime_s
    info = {"port": listener.getsockname()[1], "connections": 0}

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            try:
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    data += conn.recv(4096) or b"\r\n\r\n"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n")
                while not stop.is_set() and time.monotonic() < end:
                    conn.sendall(b"\x89")
                    stop.wait(interval_s)
            except OSError:
                pass  # the client gave up: exactly what should happen

    def accept() -> None:
        workers = []
        while not stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            info["connections"] += 1
            worker = threading.Thread(target=serve, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join(2)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# ---- 2. slow image hosts --------------------------------------------------------------------
@pytest.mark.parametrize("interval_s", [0.2, 0.02])
def test_fetch_deadline_cuts_off_a_host_that_trickles_bytes(interval_s):
    """One deadline for the whole fetch: a byte every 0.2 s (or 0.02 s) never fills a 64 KiB read,
    and no single read waits long, yet the fetch must end at its deadline."""
    with trickle_server(interval_s=interval_s) as host:
        t0 = time.perf_counter()
        with pytest.raises(FetchError, match="timed out after 1 s"):
            fetch_url(f"http://127.0.0.2:{host['port']}/slow.png", allow=loopback2_allowed, timeout_s=1.0)
        seconds = time.perf_counter() - t0
        assert host["connections"] == 1
    assert seconds < 2.0  # the host would have gone on for 8 s


def test_blocking_fetch_works_inside_a_running_event_loop():
    """fetch_url (what load_image uses for URLs) runs its own loop, even from inside one (a notebook)."""
    import asyncio
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = png_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.2:{server.server_address[1]}/a.png"
    try:
        assert fetch_url(url, allow=loopback2_allowed).startswith(b"\x89PNG")

        async def inside_a_loop() -> bytes:
            return fetch_url(url, allow=loopback2_allowed)

        assert asyncio.run(inside_a_loop()).startswith(b"\x89PNG")
    finally:
        server.shutdown()
        server.server_close()


def test_slow_image_hosts_do_not_stall_uploads(tiny):
    """36 URLs on a trickling host (more than any default thread pool has threads) while plain uploads
    go on: the uploads stay fast, and every slow URL fails alone, at the server's fetch deadline."""
    settings = ServeSettings(allow_urls=True, fetch_timeout_s=3.0, request_timeout_s=20)
    fetcher = partial(fetch_image, allow=loopback2_allowed, timeout_s=60)  # the server's deadline must cut it
    with trickle_server(lifetime_s=10) as host, serving(settings, captioners=[tiny], fetcher=fetcher) as client:
        urls = [{"url": f"http://127.0.0.2:{host['port']}/{i}.png"} for i in range(12)]
        with ThreadPoolExecutor(3) as pool:
            slow = [pool.submit(timed, client.post, "/v1/captions", json={"images": urls}) for _ in range(3)]
            wait_for(lambda: host["connections"] >= 8, timeout=5)  # fetches are in progress
            uploads = [timed(upload, client, ("cat.png", png_bytes())) for _ in range(5)]
            assert not any(f.done() for f in slow), "the uploads must be done while the slow fetches still run"
            results = [f.result() for f in slow]
    for response, seconds in uploads:
        assert response.status_code == 200 and response.json()["n_failed"] == 0
        assert seconds < 1.5, f"an upload took {seconds:.2f} s while slow URLs were being fetched"
    for response, seconds in results:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["n_failed"] == 12 and all("timed out after 3 s" in r["error"] for r in body["results"])
        assert seconds < 6.0  # at most 8 fetches at once, each cut at 3 s; not the host's 10 s


def test_request_timeout_covers_url_fetches(tiny):
    settings = ServeSettings(allow_urls=True, fetch_timeout_s=30, request_timeout_s=1.0)
    fetcher = partial(fetch_image, allow=loopback2_allowed, timeout_s=60)
    with trickle_server() as host, serving(settings, captioners=[tiny], fetcher=fetcher) as client:
        url = f"http://127.0.0.2:{host['port']}/slow.png"
        r, seconds = timed(client.post, "/v1/captions", json={"images": [url]})
    assert r.status_code == 504 and "1 s" in r.json()["detail"]
    assert seconds < 3.0


# ---- 3. timed-out and disconnected requests stop their work; the work budget -------------------
def test_a_timed_out_request_stops_using_the_model(tiny):
    """16 images x 2 languages in model calls of 4 take 8 calls (2.4 s); the request times out after
    1.5 s. Its remaining calls are skipped, so the next small request is served within its limit."""
    slow = SlowCaptioner(tiny, delay=0.3)
    settings = ServeSettings(request_timeout_s=1.5, max_batch_size=4)
    with serving(settings, captioners=[slow]) as client:
        big = upload(client, *[(f"{i}.png", png_bytes((8, 8))) for i in range(16)], lang="en,de")
        assert big.status_code == 504, big.text
        small, seconds = timed(upload, client, ("next.png", png_bytes((20, 20))))
        assert small.status_code == 200, small.text
        assert small.json()["results"][0]["caption"]
        wait_for(lambda: client.app.state.batcher.stats.cancelled == 1, timeout=3)
    assert slow.calls_of((8, 8)) <= 6, slow.calls  # 5 calls fit in 1.5 s (+1 running); not all 8
    assert slow.calls_of((20, 20)) == 1


def test_timed_out_jobs_leave_the_queue(tiny):
    """A job whose client got its 504 while queued gives its queue slot back."""
    slow = SlowCaptioner(tiny, delay=1.0)
    settings = ServeSettings(request_timeout_s=0.4, max_queue=1, batching=False)
    with serving(settings, captioners=[slow]) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(upload, client, ("1.png", png_bytes((8, 8))))
        wait_for(lambda: len(slow.calls) == 1)  # in the model
        second = upload(client, ("2.png", png_bytes((9, 9))))  # queued, then 504
        assert second.status_code == 504
        third = upload(client, ("3.png", png_bytes((10, 10))))  # the dead job must not hold the only slot
        assert third.status_code == 504, third.text  # not 503 "queue is full"
        assert first.result().status_code == 504
        wait_for(lambda: client.app.state.batcher.queued == 0, timeout=5)
        stats = client.app.state.batcher.stats
    assert stats.expired >= 1
    assert slow.calls_of((9, 9)) == 0  # the expired job never reached the model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def real_server(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_a_disconnected_client_stops_its_work(tiny):
    import httpx

    slow = SlowCaptioner(tiny, delay=0.3)
    app = create_app(ServeSettings(max_batch_size=4, request_timeout_s=30), captioners=[slow])
    with real_server(app) as base:
        files = [("image", (f"{i}.png", png_bytes((8, 8)), "image/png")) for i in range(16)]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/captions", files=files, data={"lang": "en,de"}, timeout=0.7)  # then hangs up
        wait_for(lambda: app.state.batcher.stats.cancelled == 1, timeout=3)
        r, seconds = timed(
            httpx.post, f"{base}/v1/captions", files=[("image", ("n.png", png_bytes((20, 20)), "image/png"))]
        )
        assert r.status_code == 200 and seconds < 1.5
    assert slow.calls_of((8, 8)) <= 4, slow.calls  # ~0.7 s of 2.4 s of work was done


def test_work_budget_refuses_over_budget_requests_up_front(tiny):
    slow = SlowCaptioner(tiny, delay=0.0)
    with serving(captioners=[slow]) as client:
        limits = client.get("/v1/models").json()["limits"]
        assert limits["max_work"] == 50_000
        images = [b64(png_bytes())] * 16
        heavy = {"images": images, "lang": ["en", "de", "ar", "fr", "cs"], "num_beams": 8,
                 "num_return_sequences": 8, "max_new_tokens": 100}  # fmt: skip
        r = client.post("/v1/captions", json=heavy)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "16 image(s) x 5 language(s) x 8 beam(s) x 8 return(s) x 100 tokens = 512,000" in detail
        assert "work budget (max_work) is 50,000" in detail
        assert slow.calls == []  # refused before any model work
        ok = {"images": images[:4], "lang": ["en", "de"], "num_beams": 2, "max_new_tokens": 10}
        assert client.post("/v1/captions", json=ok).status_code == 200
    small = ServeSettings(max_work=100)
    with serving(small, captioners=[tiny]) as client:
        r = upload(client, ("a.png", png_bytes()), max_new_tokens="30", num_beams="4")
        assert r.status_code == 422 and "= 120;" in r.json()["detail"]


# ---- 7. text that is not Unicode, and other bodies that used to give a 500 ----------------------
@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"images": [{"data": "IMG", "name": "a\\udcff.jpg"}]}', "images[0].name"),
        ('{"images": ["IMG"], "model": "m\\ud800"}', "model"),
        ('{"images": ["IMG"], "lang": ["en", "\\udfff"]}', "lang[1]"),
        ('{"images": ["IMG"], "style": "x\\udcff"}', "style"),
        ('{"images": ["IMG"], "\\udcffkey": 1}', "a field name"),
    ],
    ids=["name", "model", "lang", "style", "key"],
)
def test_lone_surrogates_in_json_are_400_json(tiny, body, needle):
    with serving(captioners=[tiny]) as client:
        payload = body.replace("IMG", b64(png_bytes()))
        r = client.post("/v1/captions", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert needle in detail and "lone surrogate" in detail


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ("[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
        ('{"images": ["IMG"], "num_beams": ' + "9" * 5000 + "}", 400, "not valid JSON"),
        (b'{"images": ["\xff"]}', 400, "not UTF-8"),
        ('{"images": ["IMG"], "temperature": NaN, "do_sample": true}', 422, "temperature"),
        ('{"images": ["IMG"], "min_new_tokens": 20, "max_new_tokens": 10}', 422, "must not exceed"),
    ],
    ids=["deep-nesting", "5000-digit-int", "not-utf8", "nan", "min-over-max"],
)
def test_odd_json_bodies_get_clear_json_errors(tiny, body, status, needle):
    with serving(captioners=[tiny]) as client:
        payload = body.replace("IMG", b64(png_bytes())) if isinstance(body, str) else body
        r = client.post("/v1/captions", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_option_errors_from_generation_options_are_422(tiny):
    """Whatever GenerationOptions refuses (OptionError) is a 422 with the library's own message."""
    from polycap.errors import OptionError
    from polycap.types import GenerationOptions

    with pytest.raises(OptionError) as expected:
        GenerationOptions(top_p=1.5)
    with serving(captioners=[tiny]) as client:
        r = upload(client, ("a.png", png_bytes()), top_p="1.5")
    assert r.status_code == 422 and r.json()["detail"] == str(expected.value)


def test_long_form_values_are_cut_short_in_errors(tiny):
    with serving(captioners=[tiny]) as client:
        r = upload(client, ("a.png", png_bytes()), num_beams="9" * 5000)
    assert r.status_code == 422 and len(r.json()["detail"]) < 200


def test_an_unexpected_error_is_a_json_500_naming_the_request(tiny):
    class Broken(SlowCaptioner):
        def info(self):
            raise RuntimeError("a bug")

    app = create_app(ServeSettings(), captioners=[Broken(tiny, 0.0)])
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/models", headers={"X-Request-ID": "trace-500"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "internal error (request id trace-500)"}


# ---- 8. too many multipart files ----------------------------------------------------------------
@pytest.mark.parametrize("n", [17, 33])
def test_too_many_multipart_files_is_the_documented_413(tiny, n):
    with serving(captioners=[tiny]) as client:
        r = upload(client, *[(f"{i}.png", png_bytes()) for i in range(n)])
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == "too many images: more than 16 (this server takes at most 16)"


def test_the_image_limit_is_the_same_for_json_and_multipart(tiny):
    settings = ServeSettings(max_images=3)
    with serving(settings, captioners=[tiny]) as client:
        assert upload(client, *[(f"{i}.png", png_bytes()) for i in range(3)]).status_code == 200
        r = upload(client, *[(f"{i}.png", png_bytes()) for i in range(4)])
        assert r.status_code == 413 and "at most 3" in r.json()["detail"]
        r = client.post("/v1/captions", json={"images": [b64(png_bytes())] * 4})
        assert r.status_code == 413 and r.json()["detail"] == "too many images: 4 (this server takes at most 3)"


# ---- 9. large bodies: parsed off the event loop, a bounded number at once ------------------------
@pytest.fixture
def slow_json_parse(monkeypatch):
    """json.loads takes 1 s on inputs over 1 MB and records how many such parses overlap."""
    real_loads = json.loads
    state = {"active": 0, "peak": 0, "calls": 0}
    lock = threading.Lock()

    def loads(s, *args, **kwargs):
        if len(s) <= 1_000_000:
            return real_loads(s, *args, **kwargs)
        with lock:
            state["active"] += 1
            state["calls"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            time.sleep(1.0)
            return real_loads(s, *args, **kwargs)
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(json, "loads", loads)
    return state


def large_body() -> bytes:
    """A ~2 MB JSON body: one valid image plus a large (ignored-by-nobody) second image of zeros."""
    return json.dumps({"images": [b64(png_bytes()), {"data": b64(bytes(1_500_000)), "name": "zeros.bin"}]}).encode()


def test_large_json_bodies_are_parsed_off_the_event_loop(tiny, slow_json_parse):
    with serving(captioners=[tiny]) as client, ThreadPoolExecutor(1) as pool:
        posting = pool.submit(
            client.post, "/v1/captions", content=large_body(), headers={"content-type": "application/json"}
        )
        wait_for(lambda: slow_json_parse["active"] == 1)
        health = client.get("/healthz")
        assert health.status_code == 200
        assert slow_json_parse["active"] == 1, "/healthz was only answered after the parse"
        r = posting.result()
    assert r.status_code == 200 and r.json()["n_failed"] == 1  # the zeros are not an image


def test_concurrent_large_bodies_are_bounded(tiny, slow_json_parse):
    settings = ServeSettings(max_large_bodies=2)
    with serving(settings, captioners=[tiny]) as client, ThreadPoolExecutor(6) as pool:
        post = partial(client.post, "/v1/captions", content=large_body(), headers={"content-type": "application/json"})
        responses = [f.result() for f in [pool.submit(post) for _ in range(6)]]
    assert all(r.status_code == 200 for r in responses)
    assert slow_json_parse["calls"] == 6 and slow_json_parse["peak"] == 2


# ---- 11. truthful pixel counts; no credentials echoed -------------------------------------------
def test_giant_image_header_reports_its_real_size(tiny):
    with serving(captioners=[tiny]) as client:
        r = upload(client, ("huge.png", png_header(30000, 30000)))
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert detail.startswith("huge.png: image too large: 900,000,000 pixels;"), detail
        assert "25,000,000 pixels per image" in detail and "25000000x2" not in detail
        r = upload(client, ("wide.png", png_header(6000, 5000)))  # under PIL's own limit: exact dimensions
        assert r.status_code == 413 and "6000x5000 = 30,000,000 pixels" in r.json()["detail"]


def test_credentials_in_urls_are_never_echoed_or_logged(tiny, caplog):
    secret = "hunter2pw"
    with (
        caplog.at_level(logging.DEBUG),
        trickle_server(lifetime_s=2) as host,
        serving(ServeSettings(allow_urls=True), captioners=[tiny]) as client,
    ):
        urls = [f"http://alice:{secret}@127.0.0.2:{host['port']}/a.png", f"https://bob:{secret}@example.com/b.png"]
        r = client.post("/v1/captions", json={"images": urls})
        bad = client.post("/v1/captions", json={"images": [{"url": f"ftp://eve:{secret}@example.com/x"}]})
    assert r.status_code == 200, r.text
    text = r.text + bad.text + caplog.text
    assert secret not in text and "alice" not in text and "bob" not in text
    results = r.json()["results"]
    assert results[0]["image"] == f"http://***@127.0.0.2:{host['port']}/a.png"
    assert all("credentials" in rec["error"] for rec in results)
    assert host["connections"] == 0  # refused before connecting


def test_redact_url():
    assert redact_url("https://u:p@h.example:8443/x?y=1") == "https://***@h.example:8443/x?y=1"
    assert redact_url("http://a@b@h/x") == "http://***@h/x"
    assert redact_url("http://h.example/a.png") == "http://h.example/a.png"
