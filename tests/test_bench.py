"""Smoke tests of the benchmark code (bench/) on tiny inputs; nothing is timed here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench/ is a folder of scripts beside the package
    sys.path.insert(0, str(REPO))

from bench import fused_bn, memory, precompute, published, report, training  # noqa: E402
from bench.common import interleaved_best, tree_rss  # noqa: E402
from msprior.coefficients import precompute_coefficients  # noqa: E402
from msprior.config import WaveletConfig  # noqa: E402
from msprior.io import open_h5_read  # noqa: E402
from msprior.multiscale import MultiScaleModel  # noqa: E402
from msprior.networks import BFCNN, NetworkSpec  # noqa: E402
from msprior.sampling import SamplerSettings  # noqa: E402


def test_interleaved_best_times_every_function_and_rejects_no_repeats():
    calls = []
    best = interleaved_best({"a": lambda: calls.append("a"), "b": lambda: None}, 3)
    assert set(best) == {"a", "b"} and all(t >= 0 for t in best.values())
    assert calls == ["a"] * 4  # one warm-up, three timed
    with pytest.raises(ValueError, match="repeats"):
        interleaved_best({"a": lambda: None}, 0)


def test_transform_figures_fill_the_same_arrays_as_pywt():
    images = np.random.default_rng(0).random((6, 32, 32), dtype=np.float32)
    fig = precompute.transform_figures(images, batches=(4,), repeats=1)
    assert fig["max_abs_diff"] < 1e-6
    assert fig["images"] == 6
    assert fig["ratio_b4"] > 0 and fig["memory_floor"] > 0


def test_reference_precompute_writes_what_precompute_coefficients_writes(
    embedded_data, tmp_path
):
    ours = tmp_path / "ours.h5"
    precompute_coefficients(embedded_data["faces"], ours, WaveletConfig("haar", 2))
    layout = precompute._layout(ours)
    ref = tmp_path / "ref.h5"
    precompute.reference_precompute(embedded_data["faces"], ref, layout, 2, "haar")
    with open_h5_read(ours) as a, open_h5_read(ref) as b:
        for name, spec in layout.items():
            assert b[name].chunks == spec["chunks"]
            np.testing.assert_allclose(b[name][:], a[name][:], atol=1e-6)


def test_file_figures_report_phases_and_a_profile(embedded_data, tmp_path):
    fig = precompute.file_figures(embedded_data["faces"], tmp_path, repeats=1)
    assert fig["images"] == 100 and fig["ratio"] > 0
    assert fig["phases"]["file_uncompressed_mb"] > 0
    assert fig["profile_top"] and 0 < fig["profile_top"][0]["share"] <= 1


def test_fused_batch_norm_matches_the_package_in_value_and_gradient():
    spec = NetworkSpec("conditional", depth=5, width=6, rf=7)
    torch.manual_seed(0)
    ours, theirs = BFCNN(spec).double().train(), BFCNN(spec).double().train()
    theirs.load_state_dict(ours.state_dict())
    noisy, cond = torch.randn(3, 3, 8, 8).double(), torch.rand(3, 1, 8, 8).double()
    out_a = fused_bn.fused_forward(ours, noisy, cond)
    out_b = theirs(noisy, cond=cond)
    torch.testing.assert_close(out_a, out_b)
    out_a.pow(2).sum().backward()
    out_b.pow(2).sum().backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for a, b in zip(ours.BN_layers, theirs.BN_layers, strict=True):
        torch.testing.assert_close(a.running_sd, b.running_sd)


def test_step_figures_count_flops_and_give_ratios(embedded_data):
    spec = NetworkSpec("conditional", depth=4, width=4, rf=7)
    fig = training.step_figures(
        embedded_data["wavelets"],
        spec=spec,
        batch_size=4,
        threads=(1,),
        repeats=1,
        matmul_n=64,
    )
    net = BFCNN(spec)
    assert fig["gflop_per_step"] == round(
        3 * 4 * training.conv_flops(net, 8, 8) / 1e9, 2
    )
    for name in ("package", "fused", "no_batchnorm"):
        assert fig["t1"][name]["ratio"] > 0
    assert fig["profile_top"][0]["share"] > 0


def _tiny_multiscale() -> tuple[MultiScaleModel, BFCNN]:
    torch.manual_seed(0)
    low = BFCNN(NetworkSpec("lowpass", depth=3, width=4, rf=7)).eval()
    cond = {
        j: BFCNN(NetworkSpec("conditional", depth=3, width=4, rf=7)).eval()
        for j in (1, 2)
    }
    flat = BFCNN(NetworkSpec("flat", depth=3, width=4, rf=7)).eval()
    return MultiScaleModel(low, cond, "haar"), flat


def test_denoising_figures_time_and_score_both_models():
    model, flat = _tiny_multiscale()
    clean = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    fig = published.denoising_figures(model, flat, clean, (20.0, 100.0), batch_size=2)
    assert set(fig["psnr"]) == {"20", "100"}
    assert fig["psnr"]["100"]["in"] < fig["psnr"]["20"]["in"]
    assert fig["ratio"] > 0
    assert fig["gflop_per_image"]["flat"] == round(
        published.network_flops(flat, 16, 16) / 1e9, 2
    )


def test_sampling_figures_report_steps_per_scale():
    model, _ = _tiny_multiscale()
    settings = SamplerSettings(max_steps=3, sigma_min=1e-6)
    fig = published.sampling_figures(model, (4, 4), settings, n_images=2)
    assert set(fig["steps"]) == {"1", "2", "3"}
    assert all(len(s) == 2 and max(s) <= 3 for s in fig["steps"].values())
    assert fig["size"] == [16, 16]
    assert set(fig["schedule_steps"]) == set(fig["steps"])


def test_schedule_steps_follow_the_step_size_rule():
    settings = SamplerSettings(h0=0.01, beta=0.5, sigma_min=0.01)
    assert published.schedule_steps(1.0, settings) == 0
    assert published.schedule_steps(100.0, settings) == 47
    slower = SamplerSettings(h0=0.01, beta=0.1, sigma_min=0.01)
    assert published.schedule_steps(100.0, slower) > 100
    capped = SamplerSettings(h0=0.01, beta=0.5, max_steps=10)
    assert published.schedule_steps(1e9, capped) == 10


def test_first_layer_probe_tells_linear_from_rectified(monkeypatch):
    def forward(self, noisy, cond=None, *, first_relu):
        x = self.conv_layers[0](noisy)
        x = torch.relu(x) if first_relu else x
        for conv in self.conv_layers[1:-1]:
            x = torch.relu(conv(x))
        return self.conv_layers[-1](x)

    monkeypatch.setattr(
        BFCNN, "forward", lambda s, y, cond=None: forward(s, y, first_relu=False)
    )
    assert published.first_layer_is_linear()
    monkeypatch.setattr(
        BFCNN, "forward", lambda s, y, cond=None: forward(s, y, first_relu=True)
    )
    assert not published.first_layer_is_linear()


def test_run_tree_sees_a_child_s_memory_and_time(tmp_path):
    code = "import time; b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
    code += "time.sleep(1)"
    record = memory.run_tree([sys.executable, "-c", code], tmp_path / "log")
    assert record["returncode"] == 0
    assert record["peak_tree_mib"] >= 80
    assert record["wall_s"] >= 1
    total, largest = tree_rss(__import__("os").getpid())
    assert total >= largest > 0


@pytest.mark.slow
def test_memory_figures_run_each_step_in_a_fresh_process(tmp_path):
    fig = memory.memory_figures([100], tmp_path, size=16, embedded=True)
    (run,) = fig["runs"]
    assert run["prepare"]["images"] == 100 and run["precompute"]["images"] == 100
    assert fig["growth"] == {"prepare": 1.0, "precompute": 1.0}
    assert 10 < run["prepare"]["maxrss_mib"] < 4000


def _row(key: str, meets) -> dict:
    return {
        "key": key,
        "what": f"{key} | piped",
        "against": "a reference",
        "target": ">= 1x",
        "figure": "2x",
        "meets": meets,
        "bound": "",
        "skipped": "",
        "details": {},
        "seconds": 1.0,
        "measured": {"date_utc": "now", "commit": "abc", "load_average": [1, 1, 1]},
    }


def test_record_merges_rows_and_writes_markdown_and_json(tmp_path):
    md, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    machine = {"cores": 2, "torch": torch.__version__}
    report.write_record(machine, [_row("a", True), _row("b", False)], md, js, "cmd")
    report.write_record(machine, [_row("b", None)], md, js, "cmd --only b")
    record = json.loads(js.read_text())
    assert list(record["rows"]) == ["a", "b"]
    assert record["rows"]["b"]["meets"] is None
    text = md.read_text()
    assert "| a | a \\| piped |" in text and "| reported |" in text
    assert "| cores | 2 |" in text


def test_run_writes_a_record_for_one_row(tmp_path):
    from bench import run

    assert run.main(["--only", "gpu", "--out", str(tmp_path), "--threads", "1"]) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["rows"]["gpu"]["key"] == "gpu"
    assert record["machine"]["torch_threads"] == 1
    assert "## Figures" in (tmp_path / "RESULTS.md").read_text()
