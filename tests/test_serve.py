"""The REST API: endpoints, validation, limits, queueing, auth, logs, SSRF refusals, shutdown.

Real captions come from the tiny random model (loaded once). Queueing, timeouts and batching use
a gated fake captioner that blocks until the test releases it, so they are deterministic and fast.
Everything runs on 127.0.0.1 / ::1; nothing leaves the machine.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'polycap[serve]'")
pytest.importorskip("httpx", reason="the serve extra is not installed: pip install 'polycap[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from polycap.backends.base import Capabilities, Captioner  # noqa: E402
from polycap.cli.output import record  # noqa: E402
from polycap.net import FetchError, blocked_reason, fetch_image, fetch_url, is_public  # noqa: E402
from polycap.serve import ServeSettings, create_app  # noqa: E402
from polycap.types import Caption  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cat.jpg"
API_KEY = "s3cret-test-key"


# ---- helpers --------------------------------------------------------------------------------
class GateCaptioner(Captioner):
    """Blocks in caption_batch until ``release`` is set, and records every batch size."""

    def __init__(self, name: str = "gate", languages: tuple[str, ...] = ("en", "de")):
        super().__init__(name, Capabilities(languages=languages))
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def caption_batch(self, images: Sequence[Image.Image], options) -> list[Caption]:
        self.batches.append(len(images))
        self.started.set()
        self.release.wait(15)
        return [Caption(f"{options.lang} {im.width}x{im.height}", options.lang, self.name) for im in images]


def png_bytes(size: tuple[int, int] = (24, 16), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@contextmanager
def serving(settings: ServeSettings | None = None, **kwargs) -> Iterator[TestClient]:
    settings = settings or ServeSettings()
    with TestClient(create_app(settings, **kwargs)) as client:
        yield client


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def upload(client: TestClient, *images: tuple[str, bytes], **fields):
    files = [("image", (name, data, "application/octet-stream")) for name, data in images]
    return client.post("/v1/captions", files=files, data=fields)


@pytest.fixture(scope="module")
def tiny() -> Iterator[Captioner]:
    """The tiny model, on one torch thread: it gains nothing from more, and busy CI cores make extra threads spin."""
    import torch

    import polycap

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield polycap.load("polycap-tiny-random", device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def gate() -> Iterator[GateCaptioner]:
    g = GateCaptioner()
    yield g
    g.release.set()


# ---- probes, models, docs, page -------------------------------------------------------------
def test_probes_models_docs_and_page(tiny):
    with serving(captioners=[tiny]) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        models = client.get("/v1/models").json()
        assert models["default"] == "polycap-tiny-random"
        assert models["models"][0]["languages"] == ["en", "de", "ar", "fr", "cs"]
        assert models["limits"]["allow_urls"] is False and models["limits"]["auth"] is False
        spec = client.get("/openapi.json").json()
        assert {"/v1/captions", "/v1/models", "/healthz", "/readyz"} <= set(spec["paths"])
        body = spec["paths"]["/v1/captions"]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} <= set(body)
        for path in ("/", "/docs", "/static/app.js", "/static/style.css", "/static/docs.js"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/ui", follow_redirects=False).status_code in (302, 307)


def test_static_page_loads_nothing_from_the_internet():
    static = REPO / "src" / "polycap" / "serve" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "https://" not in text and "http://" not in text.replace("http://127.0.0.1:8000", ""), path.name
        assert "//cdn" not in text and "fonts.googleapis" not in text, path.name


def test_readyz_is_503_until_the_default_model_is_loaded():
    loaded = threading.Event()

    def slow_loader(name: str) -> Captioner:
        loaded.wait(10)
        return GateCaptioner(name)

    with serving(ServeSettings(models=("slow",)), loader=slow_loader) as client:
        first = client.get("/readyz")
        assert first.status_code == 503 and first.json()["status"] == "loading"
        assert client.get("/healthz").status_code == 200
        loaded.set()
        wait_for(lambda: client.get("/readyz").status_code == 200)


def test_models_load_lazily_and_failures_are_503():
    def loader(name: str) -> Captioner:
        if name == "broken":
            raise RuntimeError("weights missing")
        return GateCaptioner(name)

    settings = ServeSettings(models=("ok", "broken"))
    with serving(settings, loader=loader) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed["ok"]["loaded"] and not listed["broken"]["loaded"]
        r = upload(client, ("a.png", png_bytes()), model="broken")
        assert r.status_code == 503 and "weights missing" in r.json()["detail"]
        assert upload(client, ("a.png", png_bytes()), model="hf:someone/else").status_code == 404


# ---- captioning -------------------------------------------------------------------------------
def test_multipart_upload_several_languages(tiny):
    with serving(captioners=[tiny]) as client:
        r = upload(client, ("cat.jpg", EXAMPLE.read_bytes()), lang="en,de", num_beams="2")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_images"] == 1 and body["n_failed"] == 0 and r.headers["x-request-id"] == body["request_id"]
    assert [rec["lang"] for rec in body["results"]] == ["en", "de"]
    for rec in body["results"]:
        assert set(rec) == set(record(Caption("x", "en", "m")))  # the same public shape as the CLI
        assert rec["image"] == "cat.jpg" and rec["caption"].strip() and rec["error"] is None


def test_json_base64_images_and_options(tiny):
    data = base64.b64encode(png_bytes()).decode()
    payload = {
        "images": [data, {"data": f"data:image/png;base64,{data}", "name": "dir/red.png"}],
        "lang": ["fr", "cs"],
        "max_new_tokens": 5,
        "seed": 3,
    }
    with serving(captioners=[tiny]) as client:
        r = client.post("/v1/captions", json=payload)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["image"], x["lang"]) for x in results] == [
        ("image-1", "fr"),
        ("image-1", "cs"),
        ("red.png", "fr"),
        ("red.png", "cs"),
    ]
    assert all(x["caption"] for x in results)


def test_bad_images_fail_alone(tiny, bad_files):
    images = [(p.name, p.read_bytes()) for key, p in bad_files.items() if key != "missing"]
    with serving(captioners=[tiny]) as client:
        r = upload(client, *images)
    assert r.status_code == 200
    by_name = {rec["image"]: rec for rec in r.json()["results"]}
    assert by_name["ok.png"]["error"] is None and by_name["ok.png"]["caption"]
    for name in ("empty.jpg", "text.jpg", "trunc.png"):
        assert by_name[name]["error"].startswith(f"{name}: "), by_name[name]
        assert by_name[name]["caption"] == ""
    assert r.json()["n_failed"] == 3


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"num_beams": "many"}, 422, "num_beams must be an integer"),
        ({"num_beams": "0"}, 422, "num_beams must be >= 1"),
        ({"num_beams": "50"}, 422, "num_beams must be <= 8"),
        ({"lang": "xx"}, 422, "does not support language 'xx'"),
        ({"style": "poem"}, 422, "styled captions"),
        ({"colour": "blue"}, 422, "unknown field(s): colour"),
        ({"model": "nope"}, 404, "not served here"),
    ],
)
def test_validation_errors(tiny, fields, status, needle):
    with serving(captioners=[tiny]) as client:
        r = upload(client, ("a.png", png_bytes()), **fields)
    assert r.status_code == status and needle in r.json()["detail"], r.text


def test_malformed_bodies(tiny):
    with serving(captioners=[tiny]) as client:
        post = partial(client.post, "/v1/captions")
        assert post(content=b"x", headers={"content-type": "text/plain"}).status_code == 415
        assert post(content=b"{", headers={"content-type": "application/json"}).status_code == 400
        assert client.post("/v1/captions", json={"images": ["@@not base64@@"]}).status_code == 400
        assert client.post("/v1/captions", json={"images": []}).status_code == 422
        assert client.post("/v1/captions", json=["a"]).status_code == 422
        image = base64.b64encode(png_bytes()).decode()
        for bad in ({"num_beams": "3"}, {"do_sample": "no"}, {"style": ["x"]}):
            r = client.post("/v1/captions", json={"images": [image], **bad})
            assert r.status_code == 422 and next(iter(bad)) in r.json()["detail"], r.text
        assert client.post("/v1/captions", data={"lang": "en"}, files={}).status_code in (415, 422)


# ---- limits ---------------------------------------------------------------------------------
def test_size_limits_are_413(tiny):
    settings = ServeSettings(max_upload_bytes=4000, max_images=2, max_pixels=1000)
    with serving(settings, captioners=[tiny]) as client:
        big = upload(client, ("big.bin", os.urandom(5000)))
        assert big.status_code == 413 and "4,000 bytes" in big.json()["detail"]
        body = iter([b"{" + b" " * 3000, b" " * 3000])
        chunked = client.post("/v1/captions", content=body, headers={"content-type": "application/json"})
        assert chunked.status_code == 413  # no Content-Length: cut while streaming
        many = upload(client, *[(f"{i}.png", png_bytes((8, 8))) for i in range(3)])
        assert many.status_code == 413 and "too many images" in many.json()["detail"]
        pixels = upload(client, ("wide.png", png_bytes((50, 40))))
        assert pixels.status_code == 413 and "wide.png" in pixels.json()["detail"]
        assert "1,000 pixels" in pixels.json()["detail"]
        assert upload(client, ("ok.png", png_bytes((20, 20)))).status_code == 200


def test_full_queue_is_503_with_retry_after(gate):
    settings = ServeSettings(max_queue=1, batching=False)
    with serving(settings, captioners=[gate]) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(upload, client, ("1.png", png_bytes()))
        assert gate.started.wait(10)  # the first request is inside the model
        second = pool.submit(upload, client, ("2.png", png_bytes()))
        wait_for(lambda: client.app.state.batcher.queued == 1)  # the second one waits in the queue
        third = upload(client, ("3.png", png_bytes()))
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert "queue is full" in third.json()["detail"]
        gate.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200


def test_request_timeout_is_504(gate):
    with serving(ServeSettings(request_timeout_s=0.3), captioners=[gate]) as client:
        r = upload(client, ("1.png", png_bytes()))
        assert r.status_code == 504 and "0.3 s" in r.json()["detail"]
        gate.release.set()


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_are_micro_batched(gate, batching):
    settings = ServeSettings(batching=batching, batch_window_ms=0)
    with serving(settings, captioners=[gate]) as client, ThreadPoolExecutor(8) as pool:
        first = pool.submit(upload, client, ("0.png", png_bytes()))
        assert gate.started.wait(10)
        rest = [pool.submit(upload, client, (f"{i}.png", png_bytes((10 + i, 10)))) for i in range(1, 7)]
        wait_for(lambda: client.app.state.batcher.queued == 6)
        gate.release.set()
        responses = [first.result()] + [f.result() for f in rest]
    assert all(r.status_code == 200 for r in responses)
    for i, r in enumerate(responses):  # each request got its own image's caption back
        assert r.json()["results"][0]["caption"] == f"en {10 + i if i else 24}x{10 if i else 16}"
    assert gate.batches == ([1, 6] if batching else [1] * 7)


# ---- auth, CORS, logs -----------------------------------------------------------------------
def test_api_key_from_environment(monkeypatch, tiny):
    monkeypatch.setenv("POLYCAP_API_KEY", API_KEY)
    settings = ServeSettings.from_env()
    assert API_KEY not in repr(settings)
    with serving(settings, captioners=[tiny]) as client:
        assert client.get("/v1/models").status_code == 401
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert upload(client, ("a.png", png_bytes())).status_code == 401
        ok = {"Authorization": f"Bearer {API_KEY}"}
        assert client.get("/v1/models", headers=ok).json()["limits"]["auth"] is True
        files = [("image", ("a.png", png_bytes(), "image/png"))]
        assert client.post("/v1/captions", files=files, headers=ok).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200


def test_no_api_key_means_open(monkeypatch, tiny):
    monkeypatch.delenv("POLYCAP_API_KEY", raising=False)
    with serving(ServeSettings.from_env(), captioners=[tiny]) as client:
        assert client.get("/v1/models").status_code == 200


def test_cors_is_off_by_default_and_on_when_configured(tiny):
    origin = {"Origin": "http://app.example"}
    with serving(captioners=[tiny]) as client:
        assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    with serving(ServeSettings(cors_origins=("http://app.example",)), captioners=[tiny]) as client:
        assert client.get("/v1/models", headers=origin).headers["access-control-allow-origin"] == "http://app.example"


def test_one_json_log_line_per_request_without_secrets(caplog, monkeypatch, tiny):
    monkeypatch.setenv("POLYCAP_API_KEY", API_KEY)
    image = png_bytes()
    with (
        caplog.at_level(logging.INFO, logger="polycap.serve.access"),
        serving(ServeSettings.from_env(), captioners=[tiny]) as client,
    ):
        files = [("image", ("secret-name.png", image, "image/png"))]
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": "trace-123"}
        assert client.post("/v1/captions?token=abc", files=files, headers=headers).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "polycap.serve.access"]
    entry = json.loads(lines[-1])
    assert entry["request_id"] == "trace-123" and entry["status"] == 200 and entry["n_images"] == 1
    assert entry["method"] == "POST" and entry["path"] == "/v1/captions" and entry["latency_ms"] > 0
    text = caplog.text
    for secret in (API_KEY, "token=abc", "secret-name", base64.b64encode(image[:30]).decode()):
        assert secret not in text


# ---- URLs and SSRF ----------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    hits: list[tuple[str, str]] = []
    redirect_to = ""

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits.append((self.path, self.headers.get("Host", "")))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", type(self).redirect_to)
            self.end_headers()
            return
        body = png_bytes() if self.path != "/huge" else b"\x89PNG" + b"0" * 300_000
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if self.path == "/page" else "image/png")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def http_server(host: str) -> Iterator[int]:
    handler = type("Handler", (_Handler,), {"hits": []})
    server = ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def loopback2_allowed(ip) -> bool:
    """Test policy: 127.0.0.2 stands in for a public host; everything else uses the real policy."""
    return str(ip) == "127.0.0.2" or is_public(ip)


def test_urls_are_refused_unless_enabled(tiny):
    with serving(captioners=[tiny]) as client:
        r = client.post("/v1/captions", json={"images": ["http://127.0.0.1/cat.jpg"]})
    assert r.status_code == 422 and "URLs are refused" in r.json()["detail"]


def test_ssrf_targets_are_refused_per_item(tiny):
    with http_server("127.0.0.1") as (port, handler):
        urls = [
            f"http://127.0.0.1:{port}/a.png",
            f"http://localhost:{port}/a.png",
            "http://10.0.0.7/a.png",
            "http://169.254.169.254/latest/meta-data/",
            f"http://[::1]:{port}/a.png",
            f"http://[::ffff:127.0.0.1]:{port}/a.png",
            f"http://2130706433:{port}/a.png",  # 127.0.0.1 written as one number
            "file:///etc/passwd",
        ]
        images = [{"url": u} for u in urls[:-1]]
        with serving(ServeSettings(allow_urls=True), captioners=[tiny]) as client:
            upload_ok = {"data": base64.b64encode(png_bytes()).decode()}
            r = client.post("/v1/captions", json={"images": [*images, upload_ok]})
            bad_scheme = client.post("/v1/captions", json={"images": [{"url": urls[-1]}]})
        assert handler.hits == []  # nothing ever connected to the loopback server
    assert r.status_code == 200
    results = r.json()["results"]
    for rec in results[:-1]:
        assert "refused" in rec["error"] or "cannot resolve" in rec["error"], rec
    assert results[-1]["error"] is None  # the uploaded image in the same batch is fine
    assert "169.254.169.254" in results[3]["error"] and "metadata" in results[3]["error"]
    assert bad_scheme.status_code == 422


def test_redirect_to_loopback_is_refused_and_allowed_fetch_is_pinned(tiny):
    with http_server("127.0.0.2") as (port, handler), http_server("127.0.0.1") as (port1, inner):
        handler.redirect_to = f"http://127.0.0.1:{port1}/a.png"
        fetcher = partial(fetch_image, allow=loopback2_allowed, timeout_s=5)
        settings = ServeSettings(allow_urls=True)
        with serving(settings, captioners=[tiny], fetcher=fetcher) as client:
            images = [{"url": f"http://127.0.0.2:{port}/redirect"}, {"url": f"http://127.0.0.2:{port}/a.png"}]
            r = client.post("/v1/captions", json={"images": images})
        assert inner.hits == []
    redirected, direct = r.json()["results"]
    assert "refused" in redirected["error"] and "127.0.0.1" in redirected["error"] and "loopback" in redirected["error"]
    assert direct["error"] is None and direct["caption"]


def test_fetch_pins_the_vetted_address_and_refuses_bad_dns_answers():
    with http_server("127.0.0.2") as (port, handler):

        def dns(answers):
            return lambda host, port: answers

        data = fetch_url(f"http://photos.test:{port}/a.png", resolver=dns(["127.0.0.2"]), allow=loopback2_allowed)
        assert data.startswith(b"\x89PNG")
        assert handler.hits == [("/a.png", f"photos.test:{port}")]  # right Host header, connected to the pinned IP
        for answers in (["10.1.2.3"], ["93.184.216.34", "127.0.0.1"], ["fd00:ec2::254"]):
            with pytest.raises(FetchError, match="refused"):
                fetch_url(f"http://rebind.test:{port}/a.png", resolver=dns(answers), allow=loopback2_allowed)
        with pytest.raises(FetchError, match="too large"):
            fetch_url(f"http://127.0.0.2:{port}/huge", allow=loopback2_allowed, max_bytes=100_000)
        with pytest.raises(FetchError, match="not an image"):
            fetch_url(f"http://127.0.0.2:{port}/page", allow=loopback2_allowed)
        handler.redirect_to = f"http://127.0.0.2:{port}/redirect"
        with pytest.raises(FetchError, match="too many redirects"):
            fetch_url(f"http://127.0.0.2:{port}/redirect", allow=loopback2_allowed, max_redirects=2)
    with pytest.raises(FetchError, match="credentials"):
        fetch_url("http://user:pw@example.com/a.png")
    with pytest.raises(FetchError, match="only http and https"):
        fetch_url("ftp://example.com/a.png")


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "::",
     "fe80::1", "fc00::1", "fd00:ec2::254", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "224.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_blocked(address):
    import ipaddress

    assert blocked_reason(ipaddress.ip_address(address)) is not None


def test_public_addresses_pass():
    import ipaddress

    assert all(is_public(ipaddress.ip_address(a)) for a in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"))


# ---- a real server: graceful shutdown, and the CLI ----------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_graceful_shutdown_finishes_in_flight_requests(gate):
    import httpx
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(ServeSettings(), captioners=[gate]), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    with ThreadPoolExecutor(1) as pool:
        files = [("image", ("a.png", png_bytes(), "image/png"))]
        pending = pool.submit(httpx.post, f"http://127.0.0.1:{port}/v1/captions", files=files, timeout=20)
        assert gate.started.wait(10)
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.3)
        assert thread.is_alive()  # still draining
        gate.release.set()
        response = pending.result()
    thread.join(10)
    assert response.status_code == 200 and response.json()["results"][0]["caption"] == "en 24x16"
    assert not thread.is_alive()


def test_polycap_serve_command_builds_the_configured_app(monkeypatch, tiny):
    """`polycap serve ...` parses its options into settings and hands uvicorn a working app."""
    import uvicorn

    from polycap.cli.app import main
    from polycap.registry import Registry

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr(Registry, "load", lambda self, name, device="auto": tiny)  # the server loads through it
    monkeypatch.setenv("POLYCAP_API_KEY", API_KEY)
    argv = ["serve", "-m", "polycap-tiny-random", "--port", "8123", "--no-batching", "--max-queue", "3"]
    argv += ["--max-work", "900"]
    assert main([*argv, "--max-upload-mb", "1", "--allow-urls", "--cors-origin", "http://a.example"]) == 0
    ((app, kwargs),) = calls
    assert kwargs["port"] == 8123 and kwargs["host"] == "127.0.0.1" and kwargs["access_log"] is False
    assert kwargs["log_config"]["loggers"]["polycap.serve.access"]["propagate"] is False  # bare JSON lines
    settings = app.state.settings
    assert (settings.batching, settings.max_queue, settings.max_upload_bytes) == (False, 3, 1024 * 1024)
    assert settings.max_work == 900
    assert settings.allow_urls and settings.cors_origins == ("http://a.example",) and settings.api_key == API_KEY
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        r = client.post("/v1/captions", files=[("image", ("cat.jpg", EXAMPLE.read_bytes()))], headers=headers)
        assert r.status_code == 200 and r.json()["results"][0]["caption"]
    assert main(["serve", "--max-queue", "0"]) == 2  # usage error, nothing started
    assert len(calls) == 1
