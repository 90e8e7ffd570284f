"""Training on real Flickr8k photos with the tiny encoder: loss falls, resume is exact, kill -9 survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import polycap  # noqa: E402
from polycap.train.config import load_config  # noqa: E402
from polycap.train.trainer import Trainer  # noqa: E402

TINY_MODEL = [
    'model.encoder={"name": "tiny-conv", "dim": 16, "seed": 0}', "model.d_model=32", "model.n_layer=1",
    "model.n_head=2", "model.max_length=24", "model.dropout=0.1", "tokenizer.vocab_size=300",
    "tokenizer.min_frequency=1", "train.batch_size=16", "train.lr=0.003", "train.warmup_steps=2",
    "train.checkpoint_every=5", "data.val_limit=8", "data.langs=[en,de]",
]


@pytest.fixture(scope="module")
def manifest(flickr8k, tmp_path_factory) -> Path:
    """32 train + 8 val real photos (absolute paths, so the manifest can live anywhere)."""
    from polycap.data.manifest import write_subset

    return write_subset(flickr8k / "captions.jsonl", tmp_path_factory.mktemp("data") / "m.jsonl",
                        {"train": 32, "val": 8})


def _cfg(manifest: Path, cache: Path, *extra: str):
    return load_config(None, [f"data.manifests=[{manifest}]", f"data.cache_dir={cache}", *TINY_MODEL, *extra])


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_best_model_loads(manifest, tmp_path):
    run = tmp_path / "run"
    summary = Trainer(_cfg(manifest, tmp_path / "cache", "train.epochs=4"), run, progress=False).run()
    log = _log(run)
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert log[-1]["loss"] < log[0]["loss"] * 0.9, [e["loss"] for e in log]
    assert set(log[0]["val"]) == {"en", "de"} and all("CIDEr" in v for v in log[0]["val"].values())
    assert summary["best_epoch"] in (1, 2, 3, 4)
    model = polycap.load(str(run / "best"), device="cpu")
    cap = model.caption(manifest.parent / "nope.jpg")  # a per-item error, not a crash
    assert not cap.ok
    first = json.loads(manifest.read_text().splitlines()[0])["image"]
    assert model.caption(first, lang="de").ok
    assert (run / "config.yaml").is_file() and (run / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "bucket", ["train.bucket_window=0", "train.bucket_window=3", "train.ema=0.9", "data.flip=true"]
)
def test_resume_mid_epoch_equals_uninterrupted_run(manifest, tmp_path, bucket):
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    Trainer(_cfg(manifest, cache, "train.epochs=2", bucket), full, progress=False).run()
    part = tmp_path / "part"
    Trainer(_cfg(manifest, cache, "train.epochs=2", "train.max_steps=13", bucket), part, progress=False).run()
    state = json.loads((part / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == 13 and state["step_in_epoch"] > 0  # stopped inside an epoch
    Trainer(_cfg(manifest, cache, "train.epochs=2", bucket), part, progress=False).run(resume=True)
    a = (full / "checkpoint" / "model.safetensors").read_bytes()
    b = (part / "checkpoint" / "model.safetensors").read_bytes()
    assert a == b, "resumed run diverged from the uninterrupted one"
    if "ema" in bucket:  # the moving average continues too
        ema = [(run / "checkpoint" / "ema.safetensors").read_bytes() for run in (full, part)]
        assert ema[0] == ema[1], "the resumed moving average diverged"
    assert [e["loss"] for e in _log(full)] == pytest.approx([e["loss"] for e in _log(part)], rel=1e-6)


def test_ema_weights_are_validated_and_saved_as_best(manifest, tmp_path):
    """With train.ema the per-epoch validation and best/ use the moving average, not the live weights."""
    from safetensors.torch import load_file

    from polycap.train.checkpoint import model_weights

    run = tmp_path / "run"
    trainer = Trainer(_cfg(manifest, tmp_path / "cache", "train.epochs=1", "train.ema=0.8"), run, progress=False)
    trainer.run()
    live = load_file(str(run / "checkpoint" / "model.safetensors"))
    ema = load_file(str(run / "checkpoint" / "ema.safetensors"))
    best = load_file(str(run / "best" / "model.safetensors"))
    assert int(ema.pop("n_averaged")) == trainer.steps_per_epoch()
    assert set(ema) == set(live)
    for k, v in ema.items():
        assert torch.equal(best[k], v), k
    assert any(not torch.equal(live[k], ema[k]) for k in live), "the average equals the live weights"
    # the live weights are back in the model after validation (only best/ holds the average)
    for k, v in model_weights(trainer.model).items():
        assert torch.equal(v, live[k]), k
    with pytest.raises(polycap.errors.PolycapError, match="train.ema"):
        load_config(None, ["train.ema=1.0"])


def test_kill_9_then_resume_continues_from_checkpoint(manifest, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["--set", f"data.manifests=[{manifest}]", "--set", f"data.cache_dir={cache}"]
    for o in [*TINY_MODEL, "train.epochs=3", "train.checkpoint_every=3"]:
        args += ["--set", o]
    cmd = [sys.executable, "-m", "polycap", "train", "--out", str(run), "-q", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    state_file = run / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file() and json.loads(state_file.read_text())["global_step"] >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state_file.read_text())["global_step"]
    assert killed_at >= 6
    out = subprocess.run([*cmd[:3], "train", "--out", str(run), "-q", "--resume"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming at epoch" in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["epochs"] == 3
    assert [e["epoch"] for e in _log(run)][-1] == 3


def test_lstm_baseline_arch_trains_and_decodes(manifest, tmp_path):
    run = tmp_path / "lstm"
    Trainer(_cfg(manifest, tmp_path / "cache", "train.epochs=2", "model.arch=lstm"), run, progress=False).run()
    model = polycap.load(str(run / "best"), device="cpu")
    first = json.loads(manifest.read_text().splitlines()[0])["image"]
    cap = model.caption(first, num_beams=3, num_return_sequences=2)
    assert cap.ok and len(cap.alternatives) == 2 and model.cfg.arch == "lstm"


def test_lstm_last_only_logits_equal_the_full_forward():
    from polycap.backends.native.lstm import LSTMDecoder, LSTMDecoderConfig

    torch.manual_seed(0)
    dec = LSTMDecoder(LSTMDecoderConfig(vocab_size=50, d_model=16, pad_token_id=1, eos_token_id=2)).eval()
    ids, memory = torch.randint(0, 50, (3, 7)), torch.randn(3, 5, 16)
    full = dec(ids, encoder_hidden_states=memory).logits
    last = dec(ids, encoder_hidden_states=memory, last_only=True).logits
    assert last.shape == (3, 1, 50) and torch.allclose(last[:, 0], full[:, -1], atol=1e-6)
    greedy = dec.generate(ids[:, :1], attention_mask=torch.ones_like(ids[:, :1]), encoder_hidden_states=memory,
                          max_new_tokens=6, min_new_tokens=6, do_sample=False, use_cache=False)
    step_by_step = ids[:, :1]
    for _ in range(6):  # argmax of the full forward, one token at a time (</s> barred, as min_new_tokens does)
        logits = dec(step_by_step, encoder_hidden_states=memory).logits[:, -1]
        nxt = logits.index_fill(1, torch.tensor([2]), -float("inf")).argmax(-1, keepdim=True)
        step_by_step = torch.cat([step_by_step, nxt], 1)
    assert torch.equal(greedy, step_by_step)


def test_config_errors_name_the_problem(tmp_path):
    from polycap.errors import PolycapError

    with pytest.raises(PolycapError, match="unknown key.*in train: epochz"):
        load_config(None, ["train.epochz=3"])
    with pytest.raises(PolycapError, match="unknown config section"):
        load_config(None, ["nonsense.x=1"])
    with pytest.raises(PolycapError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_cider_reward_equals_reference_cider_per_image(flickr8k):
    from polycap.data.manifest import read_manifest
    from polycap.eval.evaluate import references_for
    from polycap.eval.metrics import score_report
    from polycap.train.scst import CiderReward

    items = read_manifest(flickr8k / "captions.jsonl", split="val")[:60]
    refs = references_for(items, "en")
    hyps = {k: v[0] for k, v in references_for(items, "de").items() if k in refs}  # off-language: low but nonzero
    hyps.update({k: refs[k][1] for k in list(refs)[:30]})
    keys = list(hyps)
    reward = CiderReward({k: refs[k] for k in keys}, "en")
    ours = reward([hyps[k] for k in keys], keys)
    ref = score_report({k: refs[k] for k in keys}, hyps, metrics=["CIDEr"], lang="en").per_image["CIDEr"]
    assert ours == pytest.approx([ref[k] for k in keys], abs=1e-9)


def test_scst_phase_runs_from_best_xe_and_logs_rewards(manifest, tmp_path):
    run = tmp_path / "scst"
    cfg = _cfg(manifest, tmp_path / "cache", "train.epochs=1", "scst.epochs=1", "scst.langs=[en]",
               "scst.batch_size=8", "scst.samples=3")
    summary = Trainer(cfg, run, progress=False).run()
    log = _log(run)
    assert [e.get("phase", "xe") for e in log] == ["xe", "scst"]
    assert log[1]["reward"] >= 0 and "baseline" in log[1]
    assert summary["scst_epochs"] == 1
    assert (run / "best-xe" / "model.safetensors").is_file() and (run / "best" / "model.safetensors").is_file()


def test_scst_beam_mode_with_mean_baseline_runs_and_advantages_sum_to_zero(manifest, tmp_path):
    from polycap.train.scst import leave_one_out_baseline

    r = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])  # two images, K=3
    base = leave_one_out_baseline(r, 3)
    assert base.tolist() == [2.5, 2.0, 1.5, 3.0, 3.0, 0.0]
    assert (r - base).view(2, 3).sum(1).abs().max() < 1e-6  # each image's advantages sum to zero
    run = tmp_path / "beam"
    cfg = _cfg(manifest, tmp_path / "cache", "train.epochs=1", "scst.epochs=1", "scst.langs=[en]",
               "scst.batch_size=8", "scst.samples=3", "scst.mode=beam", "scst.baseline=mean")
    Trainer(cfg, run, progress=False).run()
    scst = _log(run)[-1]
    assert scst["phase"] == "scst" and scst["reward"] >= 0
    assert scst["baseline"] == pytest.approx(scst["reward"], abs=1e-6)  # the LOO mean of K rewards = their mean


def test_scst_lr_decays_per_epoch_and_survives_resume(manifest, tmp_path):
    """A resumed SCST phase gets the SCST schedule back (not the cross-entropy warm-up/cosine)."""
    run = tmp_path / "decay"
    base = ["train.epochs=1", "scst.langs=[en]", "scst.batch_size=8", "scst.samples=2", "scst.lr=1e-4",
            "scst.lr_decay=0.5", "scst.mode=beam", "scst.baseline=mean"]
    Trainer(_cfg(manifest, tmp_path / "cache", *base, "scst.epochs=1"), run, progress=False).run()
    Trainer(_cfg(manifest, tmp_path / "cache", *base, "scst.epochs=2"), run, progress=False).run(resume=True)
    scst = [e for e in _log(run) if e.get("phase") == "scst"]
    assert [e["scst_epoch"] for e in scst] == [1, 2]
    assert [e["lr"] for e in scst] == pytest.approx([1e-4 * 0.5, 1e-4 * 0.25])


def test_scst_options_are_checked():
    from polycap.errors import PolycapError

    with pytest.raises(PolycapError, match="scst.mode must be one of sample, beam"):
        load_config(None, ["scst.mode=topk"])
    with pytest.raises(PolycapError, match="scst.baseline"):
        load_config(None, ["scst.baseline=max"])
    with pytest.raises(PolycapError, match="samples >= 2"):
        load_config(None, ["scst.baseline=mean", "scst.samples=1"])


def test_set_parses_exponent_numbers():
    cfg = load_config(None, ["scst.lr=5e-5", "train.lr=1e-3", "model.name=polycap-x"])
    assert cfg.scst.lr == 5e-5 and cfg.train.lr == 1e-3 and cfg.model.name == "polycap-x"


def test_validate_checkpoint_scores_a_mid_epoch_checkpoint(manifest, tmp_path, capsys):
    import importlib.util

    run = tmp_path / "mid"
    Trainer(_cfg(manifest, tmp_path / "cache", "train.epochs=2", "train.max_steps=3"), run, progress=False).run()
    assert not (run / "log.jsonl").exists()  # stopped mid-epoch: no validation yet
    path = Path(__file__).resolve().parents[1] / "bench" / "validate_checkpoint.py"
    spec = importlib.util.spec_from_file_location("validate_checkpoint", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--out", str(run), "--limit", "4", "--save", str(tmp_path / "model")])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["global_step"] == 3 and set(out["val"]) == {"en", "de"}
    assert all(v["CIDEr"] >= 0 and v["n"] <= 4 for v in out["val"].values())
    assert polycap.load(str(tmp_path / "model"), device="cpu").caption(
        json.loads(manifest.read_text().splitlines()[0])["image"]).ok


def test_length_buckets_keep_every_caption_and_cut_padding():
    import random

    from polycap.train.data import epoch_batches, epoch_units

    rng = random.Random(0)
    pool = [(row, [1] * rng.randint(3, 30)) for row in range(200) for _ in range(rng.randint(1, 9))]

    def padded(batches):  # tokens a step computes: every caption padded to its batch's longest
        caps = ([c for u in b for c in u.captions] for b in batches)
        return sum(len(c) * max(map(len, c)) for c in caps)

    plain = epoch_batches(epoch_units(pool, 4, 1), 16, 0, 1)
    bucketed = epoch_batches(epoch_units(pool, 4, 1, by_length=True), 16, 10, 1)
    assert len(plain) == len(bucketed)
    assert all(len(b) <= 16 for b in bucketed)
    caps = sorted((u.row, len(c)) for b in bucketed for u in b for c in u.captions)
    assert caps == sorted((row, len(ids)) for row, ids in pool)  # nothing lost or repeated
    assert padded(bucketed) < 0.8 * padded(plain), (padded(bucketed), padded(plain))
    again = epoch_batches(epoch_units(pool, 4, 1, by_length=True), 16, 10, 1)
    assert [[(u.row, u.captions) for u in b] for b in again] == [[(u.row, u.captions) for u in b] for b in bucketed]


def test_side_words_keep_a_caption_from_being_mirrored():
    from polycap.train.data import mirror_safe

    assert mirror_safe("a dog runs on the beach", "en")
    assert not mirror_safe("a dog on the Left of a man", "en") and not mirror_safe("his right hand", "en")
    assert mirror_safe("a bright light", "en")  # "right" only as a word start
    assert not mirror_safe("ein Hund rechts neben einem Mann", "de") and not mirror_safe("die linke Hand", "de")
    assert not mirror_safe("un chien à gauche", "fr") and not mirror_safe("la main droite", "fr")
    assert not mirror_safe("pes vlevo", "cs") and not mirror_safe("pravou rukou", "cs")
    assert not mirror_safe("كلب على اليمين", "ar") and not mirror_safe("يده اليسرى", "ar")
    assert mirror_safe("كلب يجري على الشاطئ", "ar")
    assert not mirror_safe("собака бежит", "ru")  # no word list: never mirrored


def test_mirror_units_flip_only_safe_units_about_half_the_time():
    from polycap.train.data import Unit, collate, mirror_units

    units = [Unit(r, [[1, r + 2, 2], [1, 5, 2]]) for r in range(400)]
    unsafe = {r for r in range(400) if r % 5 == 0}
    unsafe_ids = {(1, r + 2, 2) for r in unsafe}
    out = mirror_units(units, unsafe_ids, seed=3)
    assert [u.row for u in out] == list(range(400)) and [u.captions for u in out] == [u.captions for u in units]
    flipped = {u.row for u in out if u.mirrored}
    assert not flipped & unsafe
    assert 0.4 < len(flipped) / 320 < 0.6, len(flipped)
    assert {u.row for u in mirror_units(units, unsafe_ids, seed=3) if u.mirrored} == flipped  # deterministic
    assert {u.row for u in mirror_units(units, unsafe_ids, seed=4) if u.mirrored} != flipped
    rows, *_ = collate(out[:10], pad_id=0, mirror_offset=1000)
    assert rows.tolist() == [u.row + (1000 if u.mirrored else 0) for u in out[:10]]


def test_flip_trains_on_the_mirrored_views_of_safe_captions(manifest, tmp_path):
    from polycap.data.features import FeatureCache
    from polycap.train.data import collate

    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    side = "a dog stands on the left of a man ."
    first = next(x for x in lines if x["split"] == "train")
    first["captions"]["en"][0] = side
    edited = tmp_path / "m.jsonl"
    edited.write_text("".join(json.dumps(x) + "\n" for x in lines))
    trainer = Trainer(_cfg(edited, tmp_path / "cache", "train.epochs=1", "data.flip=true"), tmp_path / "r",
                      progress=False)
    n = len(trainer.train_split.items)
    assert trainer.mirror_offset == n and trainer.train_features.shape[0] == 2 * n
    cache = FeatureCache(tmp_path / "cache", trainer.encoder)
    paths = [it.image for it in trainer.train_split.items]
    torch.testing.assert_close(trainer.train_features[n:], cache.get(paths, flip=True))
    torch.testing.assert_close(trainer.train_split.features, cache.get(paths))  # SCST and the plain view
    side_ids = trainer.tok.encode(side, "en", trainer.ncfg.max_length)
    assert tuple(side_ids) in trainer.mirror_unsafe_ids
    other = trainer.tok.encode(first["captions"]["en"][1], "en", trainer.ncfg.max_length)
    assert tuple(other) not in trainer.mirror_unsafe_ids
    units = [u for seed in range(5) for b in trainer.epoch_plan(seed) for u in b]
    mirrored = [u for u in units if u.mirrored]
    assert 0.3 * len(units) < len(mirrored) < 0.7 * len(units)
    assert not any(tuple(c) in trainer.mirror_unsafe_ids for u in mirrored for c in u.captions)
    assert not any(u.mirrored for u in units if side_ids in u.captions)
    rows, *_ = collate(mirrored[:3], trainer.pad_id, trainer.mirror_offset)
    assert (rows >= n).all()
    plain = Trainer(_cfg(manifest, tmp_path / "cache", "train.epochs=1"), tmp_path / "p", progress=False)
    assert plain.mirror_offset == 0 and not any(u.mirrored for b in plain.epoch_plan(0) for u in b)


def test_train_state_reads_checkpoints_written_before_the_engine():
    """state.json of the old loop (no phase_epoch; SCST counted in scst_epoch) resumes in the same place."""
    from polycap.train.engine import TrainState

    xe = TrainState.from_dict({"epoch": 2, "step_in_epoch": 7, "global_step": 31, "best": 0.4, "bad_epochs": 1,
                               "best_epoch": 1, "epoch_loss_sum": 12.5, "epoch_loss_n": 7})
    assert (xe.phase, xe.epoch, xe.phase_epoch, xe.step_in_epoch, xe.epoch_loss_n) == ("xe", 2, 2, 7, 7)
    scst = TrainState.from_dict({"epoch": 5, "step_in_epoch": 0, "global_step": 90, "best": 0.5, "bad_epochs": 0,
                                 "phase": "scst", "scst_epoch": 1})
    assert (scst.phase, scst.epoch, scst.phase_epoch) == ("scst", 5, 1)
    with pytest.raises(polycap.errors.PolycapError, match="unknown key.*epochz"):
        TrainState.from_dict({"epochz": 1})
