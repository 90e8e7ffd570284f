"""LoRA fine-tuning (``polycap finetune``) over tiny random HF captioners built locally; no downloads."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from PIL import Image  # noqa: E402

import hf_tiny  # noqa: E402
import polycap  # noqa: E402
from polycap import OptionError  # noqa: E402
from polycap.train.finetune import FinetuneConfig, finetune  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def registered():
    with hf_tiny.offline_registry() as registry:
        yield registry


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Six coloured squares with one repeated caption each: four train, two val."""
    root = tmp_path_factory.mktemp("ft-data")
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    lines = []
    for i, (word, rgb) in enumerate([*colours.items(), *colours.items()]):
        Image.new("RGB", (32, 32), rgb).save(root / f"{i}.png")
        split = "val" if i >= 4 else "train"
        lines.append({"image": f"{i}.png", "split": split, "captions": {"en": [f"a {word} ball on grass"]}})
    path = root / "captions.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-models")
    return {fam: hf_tiny.BUILDERS[fam](root / fam) for fam in ("git", "vit-gpt2", "blip", "blip2", "florence2")}


@pytest.mark.parametrize("family", ["git", "vit-gpt2", "blip", "blip2", "florence2"])
def test_finetune_lowers_val_loss_and_result_loads(family, tiny, manifest, tmp_path):
    cfg = FinetuneConfig(model=f"hf:{tiny[family]}", data=manifest, out=tmp_path / "run", lora_r=4, lora_alpha=8,
                         epochs=3, lr=5e-3, batch_size=4, device="cpu")  # fmt: skip
    summary = finetune(cfg, progress=False)
    losses = [h["val_loss"] for h in summary["history"]]
    assert summary["epochs_run"] == 3 and losses[-1] < losses[0]
    assert summary["best_epoch"] == 1 + losses.index(min(losses))
    model = polycap.load(str(tmp_path / "run"), device="cpu")
    cap = model.caption(manifest.parent / "0.png", max_new_tokens=6)
    assert cap.ok and model.name == str(tmp_path / "run")
    assert (tmp_path / "run" / "adapter").is_dir() and (tmp_path / "run" / "last.pt").is_file()


def test_early_stopping_keeps_the_best_adapter(tiny, manifest, tmp_path):
    # a huge learning rate diverges after the first epoch: patience 1 stops at epoch 2
    cfg = FinetuneConfig(model=f"hf:{tiny['git']}", data=manifest, out=tmp_path / "run", lora_r=4, epochs=6, lr=5.0,
                         batch_size=4, early_stopping_patience=1, device="cpu")  # fmt: skip
    lines: list[str] = []
    summary = finetune(cfg, progress=False, report=lines.append)
    if summary["best_epoch"] == summary["epochs_run"]:
        pytest.skip("the diverging run happened to improve every epoch")
    assert summary["stopped_early"] and summary["epochs_run"] == summary["best_epoch"] + 1
    assert [line.split(":")[0] for line in lines[:-1]] == [f"epoch {e}/6" for e in range(1, summary["epochs_run"] + 1)]
    assert lines[-1].startswith("early stopping: no improvement in 1 epoch(s)") and "no improvement (1/1)" in lines[-2]


def test_resume_continues_from_the_last_epoch(tiny, manifest, tmp_path):
    base = {"model": f"hf:{tiny['git']}", "data": manifest, "out": tmp_path / "run", "lora_r": 4, "lr": 5e-3,
            "batch_size": 4, "device": "cpu", "early_stopping_patience": 0}  # fmt: skip
    finetune(FinetuneConfig(**base, epochs=1), progress=False)
    summary = finetune(FinetuneConfig(**base, epochs=2), progress=False, resume=True)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2


def test_cli_with_merge_and_cider(tiny, manifest, tmp_path):
    import polycap.cli.finetune  # noqa: F401 - attaches the command (commands.py lists it once wired)
    from polycap.cli import main

    out = tmp_path / "run"
    argv = ["finetune", "--model", f"hf:{tiny['vit-gpt2']}", "--data", str(manifest), "--out", str(out),
            "--lora-r", "4", "--epochs", "1", "--lr", "1e-3", "--batch-size", "4", "--eval-metric", "CIDEr",
            "--merge", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == "hf" and config["base_model"] == "merged" and config["adapter"] is None
    assert "val_cider" in json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert polycap.load(str(out), device="cpu").caption(manifest.parent / "1.png", max_new_tokens=4).ok


def test_finetuning_in_another_language_makes_a_model_of_that_language(tiny, manifest, tmp_path):
    data = tmp_path / "de.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for x in lines:
        x["image"] = str(manifest.parent / x["image"])
        x["captions"] = {"de": ["ein roter ball"]}
    data.write_text("\n".join(json.dumps(x) for x in lines))
    cfg = FinetuneConfig(model=f"hf:{tiny['git']}", data=data, out=tmp_path / "run", lang="de", lora_r=4, epochs=1,
                         batch_size=4, eval_metric="cider", device="cpu")  # fmt: skip
    finetune(cfg, progress=False)
    model = polycap.load(str(tmp_path / "run"), device="cpu")
    assert model.capabilities.languages == ("de",)
    assert model.caption(manifest.parent / "0.png", lang="de", max_new_tokens=3).lang == "de"


def test_bad_options_are_refused(tiny, manifest, tmp_path):
    with pytest.raises(OptionError, match="eval_metric"):
        FinetuneConfig(model="hf:x", data=manifest, out=tmp_path, eval_metric="bleu")
    cfg = FinetuneConfig(model=f"hf:{tiny['git']}", data=manifest, out=tmp_path / "r", target_modules="nope",
                         device="cpu")  # fmt: skip
    with pytest.raises(OptionError, match="nope"):
        finetune(cfg, progress=False)


def test_training_inputs_start_where_generation_starts_and_fit_the_model(tiny, tmp_path):
    # real captions: BLIP must be trained from [DEC] (what generate() starts from), not the tokenizer's [CLS];
    # captions longer than the text positions (Flickr8k has 40-word ones) are cut, not a crash
    from polycap.backends.hf.backend import load_hf
    from polycap.train.finetune import max_text_tokens, train_inputs

    images = [Image.new("RGB", (32, 32), (200, 10, 10))] * 2
    long = " ".join(["a red ball on the grass with a dog"] * 20)  # 180 words; the tiny models have 64 positions
    for family in ("blip", "git", "vit-gpt2", "florence2"):
        cap = load_hf(str(tiny[family]), device="cpu")
        batch = train_inputs(cap, images, ["a red ball", long])
        ids = batch.get("input_ids") if family in ("blip", "git") else batch["labels"]
        assert ids.shape[1] <= max_text_tokens(cap.model) == 64
        if family == "blip":
            assert batch["input_ids"][:, 0].tolist() == [cap.model.config.text_config.bos_token_id] * 2
        assert float(cap.model(**batch).loss) > 0


def test_finetuned_blip_writes_the_caption_it_learned(tiny, manifest, tmp_path):
    # one caption for every image: after training, greedy generation (from [DEC]) must reproduce it
    data = tmp_path / "one.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for x in lines:
        x["image"] = str(manifest.parent / x["image"])
        x["captions"] = {"en": ["a dog with a ball on grass"] * 8}  # 32 pairs: 8 steps an epoch
    data.write_text("\n".join(json.dumps(x) for x in lines))
    cfg = FinetuneConfig(model=f"hf:{tiny['blip']}", data=data, out=tmp_path / "run", lora_r=8, lora_alpha=16,
                         lora_dropout=0.0, epochs=12, lr=2e-2, batch_size=4, early_stopping_patience=0,
                         device="cpu")  # fmt: skip
    finetune(cfg, progress=False)
    model = polycap.load(str(tmp_path / "run"), device="cpu")
    assert model.caption(manifest.parent / "5.png", max_new_tokens=10).text == "a dog with a ball on grass"


def test_resumed_run_equals_the_uninterrupted_one(tiny, manifest, tmp_path):
    """The checkpoint holds the RNG too, so LoRA dropout after a resume draws what the uninterrupted run drew."""
    base = {"model": f"hf:{tiny['git']}", "data": manifest, "lora_r": 4, "lr": 5e-3, "batch_size": 4,
            "device": "cpu", "early_stopping_patience": 0, "lora_dropout": 0.3}  # fmt: skip
    full = finetune(FinetuneConfig(**base, out=tmp_path / "full", epochs=2), progress=False)
    finetune(FinetuneConfig(**base, out=tmp_path / "part", epochs=1), progress=False)
    part = finetune(FinetuneConfig(**base, out=tmp_path / "part", epochs=2), progress=False, resume=True)
    keys = ("train_loss", "val_loss")
    assert [[h[k] for k in keys] for h in part["history"]] == [[h[k] for k in keys] for h in full["history"]]
