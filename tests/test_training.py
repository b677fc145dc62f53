import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
import pytest
import torch

from msprior import training
from msprior.config import TrainConfig
from msprior.io import load_torch
from msprior.networks import NetworkSpec, load_model
from msprior.training import (
    NonFiniteLossError,
    Task,
    TrainingInterrupted,
    load_arrays,
    train,
    training_sigmas,
)

SMALL = TrainConfig(
    batch_size=8,
    max_steps=12,
    checkpoint_every=4,
    validate_every=4,
    valid_images=4,
    valid_sigmas_255=(20.0,),
    progress=False,
)
COND = Task(NetworkSpec("conditional", 4, 8, 5), level=1)


def run(task, data, out, cfg=SMALL, seed=0, path=None):
    if path is None:
        path = data["faces"] if task.spec.role == "flat" else data["wavelets"]
    return train(
        task,
        cfg,
        train_path=path,
        valid_path=path,
        out_model=out / "model.pt",
        checkpoint=out / "ckpt.pt",
        metrics=out / "metrics.jsonl",
        seed=seed,
        device="cpu",
    )


def state(path):
    return load_torch(path)["state_dict"]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_noise_levels_follow_the_recipe():
    s = training_sigmas(100_000, torch.Generator().manual_seed(0))
    k = torch.round(s.sqrt() * 255)
    assert k.min() == 0 and k.max() == 254
    torch.testing.assert_close(s, (k / 255) ** 2)
    assert abs(k.float().mean().item() - 127) < 1


@pytest.mark.parametrize(
    ("role", "level", "channels"),
    [("conditional", 1, 3), ("lowpass", 2, 1), ("flat", 0, 1)],
)
def test_each_role_reads_only_its_arrays(embedded_data, role, level, channels):
    task = Task(NetworkSpec(role, 4, 8, 5), level)
    path = embedded_data["faces" if role == "flat" else "wavelets"]
    data = load_arrays(task, path, "train")
    target, cond = data.batch(np.array([3, 0, 1]))
    side = 16 // 2**level
    assert target.shape == (3, channels, side, side)
    assert (cond is None) == (role != "conditional")
    first, _ = data.batch(np.array([0]))
    torch.testing.assert_close(target[1], first[0])  # the order of idx is kept


def test_a_few_steps_lower_the_loss_on_real_faces(embedded_data, tmp_path):
    cfg = TrainConfig(
        batch_size=16,
        max_steps=60,
        checkpoint_every=60,
        validate_every=20,
        valid_images=8,
        valid_sigmas_255=(50.0,),
        progress=False,
    )
    task = Task(NetworkSpec("flat", 5, 16, 7), 0)
    run(task, embedded_data, tmp_path, cfg)
    rows = [
        json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [20, 40, 60]
    # the validation PSNR at sigma 50/255 rises above the noisy input's (about 14 dB)
    assert rows[-1]["valid_psnr_50"] > rows[0]["valid_psnr_50"]
    assert rows[-1]["valid_psnr_50"] > 16
    assert load_model(tmp_path / "model.pt").spec == task.spec


def test_resume_after_sigterm_is_bit_identical(embedded_data, tmp_path, monkeypatch):
    run(COND, embedded_data, tmp_path / "whole")
    original = training.make_batch

    def make_batch_then_term(task, data, cfg, seed, step):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(task, data, cfg, seed, step)

    monkeypatch.setattr(training, "make_batch", make_batch_then_term)
    with pytest.raises(TrainingInterrupted, match="step 7"):
        run(COND, embedded_data, tmp_path / "cut")
    assert load_torch(tmp_path / "cut" / "ckpt.pt")["step"] == 7
    assert not (tmp_path / "cut" / "model.pt").exists()
    monkeypatch.setattr(training, "make_batch", original)
    run(COND, embedded_data, tmp_path / "cut")
    assert_same_state(
        state(tmp_path / "whole" / "model.pt"), state(tmp_path / "cut" / "model.pt")
    )
    whole = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    cut = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["loss"] for r in whole] == [
        json.loads(r)["loss"] for r in cut
    ]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(embedded_data, tmp_path):
    cfg = TrainConfig(
        batch_size=8,
        max_steps=150,
        threads=1,  # the same in the killed process and here: bit-identical sums
        checkpoint_every=2,
        validate_every=50,
        valid_images=4,
        valid_sigmas_255=(20.0,),
        progress=False,
    )
    run(COND, embedded_data, tmp_path / "whole", cfg)
    out = tmp_path / "cut"
    out.mkdir()
    code = (
        "import sys, pathlib; from msprior.training import train, Task; "
        "from msprior.networks import NetworkSpec\n"
        "from msprior.config import TrainConfig\n"
        # A pause at each checkpoint, so that a fast machine cannot finish all the
        # steps between two polls; the numbers it computes are untouched.
        "import time, msprior.training as T; keep = T._checkpoint_state\n"
        "T._checkpoint_state = lambda *a: (time.sleep(0.02), keep(*a))[1]\n"
        f"cfg = TrainConfig(**{cfg.__dict__!r})\n"
        "p = sys.argv[1]; o = pathlib.Path(sys.argv[2])\n"
        "train(Task(NetworkSpec('conditional', 4, 8, 5), 1), cfg, train_path=p, "
        "valid_path=p, out_model=o / 'model.pt', checkpoint=o / 'ckpt.pt', "
        "metrics=o / 'metrics.jsonl', seed=0, device='cpu')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(embedded_data["wavelets"]), str(out)]
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "ckpt.pt").exists() and load_torch(out / "ckpt.pt")["step"] >= 10:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (out / "model.pt").exists(), "the job finished before it could be killed"
    train(
        COND,
        cfg,
        train_path=embedded_data["wavelets"],
        valid_path=embedded_data["wavelets"],
        out_model=out / "model.pt",
        checkpoint=out / "ckpt.pt",
        metrics=out / "metrics.jsonl",
        seed=0,
        device="cpu",
    )
    assert_same_state(state(tmp_path / "whole" / "model.pt"), state(out / "model.pt"))


def test_different_seeds_differ(embedded_data, tmp_path):
    run(COND, embedded_data, tmp_path / "a", seed=0)
    run(COND, embedded_data, tmp_path / "b", seed=1)
    a, b = state(tmp_path / "a" / "model.pt"), state(tmp_path / "b" / "model.pt")
    assert not torch.equal(a["conv_layers.0.weight"], b["conv_layers.0.weight"])


def test_non_finite_loss_stops_naming_the_step(embedded_data, tmp_path, monkeypatch):
    original = training.loss_fn
    calls = {"n": 0}

    def nan_at_step_5(estimate, noise):
        calls["n"] += 1
        loss = original(estimate, noise)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(training, "loss_fn", nan_at_step_5)
    with pytest.raises(NonFiniteLossError, match="at step 5"):
        run(COND, embedded_data, tmp_path)
    assert load_torch(tmp_path / "ckpt.pt")["step"] == 4  # the last good one is kept
    assert not (tmp_path / "model.pt").exists()


def test_checkpoint_of_another_network_is_set_aside(embedded_data, tmp_path, caplog):
    run(COND, embedded_data, tmp_path)
    other = Task(NetworkSpec("conditional", 4, 8, 7), level=1)
    run(other, embedded_data, tmp_path)
    assert "another configuration (spec.rf)" in caplog.text
    assert load_torch(tmp_path / "ckpt.superseded.pt")["fingerprint"]["spec"]["rf"] == 5
    assert load_torch(tmp_path / "ckpt.pt")["fingerprint"]["spec"]["rf"] == 7


def test_changed_recipe_or_seed_trains_afresh(embedded_data, tmp_path, caplog):
    """A checkpoint is resumed only by the job that wrote it: after a change of
    learning rate the weights are those of a fresh run at the new rate."""
    faster = dataclasses.replace(SMALL, lr=5e-3)
    run(COND, embedded_data, tmp_path / "fresh", faster)
    run(COND, embedded_data, tmp_path / "changed")
    run(COND, embedded_data, tmp_path / "changed", faster)
    assert "another configuration (recipe.lr)" in caplog.text
    assert_same_state(
        state(tmp_path / "fresh" / "model.pt"), state(tmp_path / "changed" / "model.pt")
    )
    rows = (tmp_path / "changed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [4, 8, 12]  # not the old run's too
    caplog.clear()
    run(COND, embedded_data, tmp_path / "changed", faster, seed=1)
    assert "another configuration (seed)" in caplog.text


def _relabelled(src, dst, **attrs):
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        f.attrs.update(attrs)
    return dst


def test_changed_training_data_trains_afresh(embedded_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, "msprior.training")
    run(COND, embedded_data, tmp_path / "out")
    # the same faces, written by another commit on another machine: resumed
    rewritten = _relabelled(
        embedded_data["wavelets"],
        tmp_path / "rewritten.h5",
        faces_md5="1" * 32,
        faces_path="/elsewhere/faces.h5",
        created_by='{"commit": "abc", "machine": {}}',
    )
    run(COND, embedded_data, tmp_path / "out", path=rewritten)
    assert "resumed from step 12" in caplog.text
    other = _relabelled(
        embedded_data["wavelets"], tmp_path / "other.h5", faces_content_sha256="0" * 64
    )
    run(COND, embedded_data, tmp_path / "out", path=other)
    assert "another configuration (data.faces_content_sha256)" in caplog.text


def test_an_unreadable_checkpoint_is_set_aside(embedded_data, tmp_path, caplog):
    (tmp_path / "ckpt.pt").write_bytes(b"half a checkpoint")
    run(COND, embedded_data, tmp_path)
    assert "ckpt.pt: unreadable" in caplog.text
    assert (tmp_path / "ckpt.superseded.pt").read_bytes() == b"half a checkpoint"
    assert load_torch(tmp_path / "ckpt.pt")["step"] == 12


def test_more_steps_continue_the_checkpoint_exactly(embedded_data, tmp_path, caplog):
    """Raising max_steps is bookkeeping: the run continues where it stopped and ends
    where a run asked for the larger number from the start ends. Fewer steps than the
    checkpoint's start afresh."""
    caplog.set_level(logging.INFO, "msprior.training")
    longer = dataclasses.replace(SMALL, max_steps=20)
    run(COND, embedded_data, tmp_path / "whole", longer)
    run(COND, embedded_data, tmp_path / "grown")
    run(COND, embedded_data, tmp_path / "grown", longer)
    assert "resumed from step 12" in caplog.text
    assert_same_state(
        state(tmp_path / "whole" / "model.pt"), state(tmp_path / "grown" / "model.pt")
    )
    run(COND, embedded_data, tmp_path / "grown", SMALL)
    assert "at step 20, past this run's 12 steps" in caplog.text


def _read(path):
    task = Task(NetworkSpec("conditional", 4, 8, 5), 1)
    return float(load_arrays(task, path, "train").batch(np.arange(4))[0].sum())


def test_concurrent_readers(embedded_data, monkeypatch):
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    with ProcessPoolExecutor(4) as pool:
        sums = list(pool.map(_read, [embedded_data["wavelets"]] * 8))
    assert len(set(sums)) == 1


def test_data_too_large_for_memory_is_read_per_batch(embedded_data, monkeypatch):
    task = Task(NetworkSpec("conditional", 4, 8, 5), 1)
    in_memory = load_arrays(task, embedded_data["wavelets"], "train")
    monkeypatch.setattr(training, "IN_MEMORY_LIMIT", 0)
    on_disk = load_arrays(task, embedded_data["wavelets"], "train")
    assert not isinstance(on_disk.target, np.ndarray)  # an HDF5 dataset, read lazily
    idx = np.array([7, 2, 5])
    for a, b in zip(in_memory.batch(idx), on_disk.batch(idx), strict=True):
        torch.testing.assert_close(a, b)


def test_gpu_only_settings_count_only_on_a_gpu(embedded_data):
    path = embedded_data["wavelets"]
    amp = dataclasses.replace(SMALL, amp=True, channels_last=True)
    on = {d: training.fingerprint(COND, amp, 0, path, d) for d in ("cpu", "cuda")}
    off = {d: training.fingerprint(COND, SMALL, 0, path, d) for d in ("cpu", "cuda")}
    assert on["cpu"] == off["cpu"]
    assert on["cuda"] != off["cuda"]
