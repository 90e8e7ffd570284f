"""Registry: schemes, folders, names, and plugins found through the entry-point group."""

from __future__ import annotations

import json
import textwrap

import pytest

import polycap
from polycap.errors import ModelNotFoundError
from polycap.registry import Registry, get_registry

PLUGIN = textwrap.dedent(
    '''
    from polycap.backends.base import Capabilities, Captioner
    from polycap.registry import ModelSpec
    from polycap.types import Caption

    class SizeCaptioner(Captioner):
        """Says how big the image is: a plugin backend outside polycap."""
        def caption_batch(self, images, options):
            return [Caption(f"{im.width}x{im.height}", options.lang, self.name) for im in images]

    def _load(ref, *, device="auto", name=None, **kw):
        return SizeCaptioner(name or ref, Capabilities(languages=("en",), beam_search=False, sampling=False))

    def register(registry):
        registry.add_backend("size", _load, schemes=("size",))
        registry.add_model(ModelSpec(name="size-test", backend="size", ref="size-test"))
    '''
)


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """Install a plugin the way pip would: a module plus a dist-info with entry_points.txt."""
    (tmp_path / "polycap_sizeplugin.py").write_text(PLUGIN)
    dist = tmp_path / "polycap_sizeplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: polycap-sizeplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[polycap.backends]\nsize = polycap_sizeplugin:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield get_registry(refresh=True)
    monkeypatch.undo()
    get_registry(refresh=True)


def test_outside_plugin_is_discovered_and_loadable(plugin_on_path):
    assert "size-test" in {m["name"] for m in polycap.list_models()}
    assert "native" in plugin_on_path.backends  # built-ins come through the same group
    cap = polycap.load("size-test")
    assert cap.caption(polycap_image(12, 7)).text == "12x7"
    assert polycap.load("size:anything").caption(polycap_image(3, 4)).text == "3x4"


def polycap_image(w, h):
    from PIL import Image

    return Image.new("RGB", (w, h))


def test_broken_plugin_does_not_break_polycap(tmp_path, monkeypatch):
    (tmp_path / "polycap_broken.py").write_text("raise RuntimeError('I am broken')\n")
    dist = tmp_path / "polycap_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: polycap-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[polycap.backends]\nbroken = polycap_broken:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reg = get_registry(refresh=True)
        assert "broken" in reg.plugin_errors and "I am broken" in reg.plugin_errors["broken"]
        assert "polycap-tiny-random" in reg.models
    finally:
        monkeypatch.undo()
        get_registry(refresh=True)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelNotFoundError) as e:
        polycap.load("polycap-tiny-randm")
    assert "Did you mean: polycap-tiny-random" in str(e.value)


def test_unknown_scheme_and_bad_folders(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        polycap.load("nosuchscheme:foo")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        polycap.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"backend": "martian"}))
    with pytest.raises(ModelNotFoundError, match="needs backend 'martian'"):
        polycap.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelNotFoundError, match="no 'backend' field"):
        polycap.load(str(tmp_path))


def test_native_model_folder_round_trip(tmp_path):
    """A saved model folder loads back through polycap.load(folder) with identical captions."""
    from PIL import Image

    tiny = polycap.load("polycap-tiny-random", device="cpu")
    tiny.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["backend"] == "native"
    again = polycap.load(str(tmp_path / "m"), device="cpu")
    img = Image.new("RGB", (40, 30), (120, 50, 200))
    for lang in ("en", "ar"):
        assert again.caption(img, lang=lang, num_beams=2).text == tiny.caption(img, lang=lang, num_beams=2).text


def test_default_model_and_registry_isolation():
    reg = Registry()
    with pytest.raises(ModelNotFoundError, match="no default model"):
        reg.default_model()
    assert polycap.default_model() in {m["name"] for m in polycap.list_models()}
