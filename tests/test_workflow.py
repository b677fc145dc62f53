"""The whole workflow on the embedded faces, shrunk to run in a minute or two."""

import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "run": "tiny",
    "data": {"size": 16},
    "networks": {
        "depth": 4,
        "width": 8,
        "lowpass_depth": 4,
        "receptive_fields": [5, 7],
    },
    "train": {
        "max_steps": 20,
        "batch_size": 16,
        "checkpoint_every": 10,
        "validate_every": 10,
        "valid_images": 4,
        "progress": False,
        "patch_size": None,
    },
    "evaluate": {"n_images": 4, "sigmas_255": [10, 100]},
    "sample": {
        "rf": 5,
        "n_samples": 3,
        "batch_size": 2,
        "max_steps": 40,
        "superres_images": 2,
        "superres_per_image": 2,
        "inpaint_images": 2,
        "sigma_min": 0.3,
    },
}

FIGURES = [
    "denoising_curves",
    "denoising_examples",
    "samples",
    "samples_flat",
    "sampling_traces",
    "superres",
    "inpainting",
]


def snakemake(*args, cwd=REPO):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


def run_published_preset(preset, tmp_path, shared_data, *, data, evaluate):
    """Run a published preset on the shared networks, shrunk to a few images and
    three sampler steps; return the finished process and the run's folder."""
    small = {
        "results": str(tmp_path / "results"),
        "data": data,
        "networks": {"published_dir": str(shared_data / "published-denoisers")},
        "evaluate": evaluate,
        "sample": {
            "n_samples": 1,
            "batch_size": 1,
            "max_steps": 3,
            "superres_images": 1,
            "superres_per_image": 1,
            "inpaint_images": 1,
        },
    }
    local = tmp_path / "small.yaml"
    local.write_text(yaml.safe_dump(small))
    done = snakemake(
        "all", "--configfile", REPO / "config" / "presets" / f"{preset}.yaml", local
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done, tmp_path / "results" / preset


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY | {"results": str(root / "results")}))
    done = snakemake("all", "--configfile", config)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, config, root / "results" / "tiny"


@pytest.mark.slow
def test_every_figure_and_table_is_drawn(tiny_run):
    _, _, run = tiny_run
    for name in FIGURES:
        for suffix in (".png", ".pdf"):
            assert (run / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    table = pd.read_csv(run / "tables" / "denoising.csv")
    assert list(table.columns) == [
        "model",
        "rf",
        "sigma_255",
        "psnr_in",
        "psnr_out",
        "n_images",
    ]
    assert set(table["model"]) == {
        "flat_rf5",
        "flat_rf7",
        "multiscale_rf5",
        "multiscale_rf7",
        "lowpass_only",
    }
    assert len(table) == 5 * 2 and (table["n_images"] == 4).all()
    assert "|" in (run / "tables" / "denoising.md").read_text()
    assert "\\begin{tabular}" in (run / "tables" / "denoising.tex").read_text()
    # max_steps 20 at the finest scale, 4x at level 2; a metrics row every 10 steps
    rows = {
        "lowpass": 8,
        "conditional_j1_rf5": 2,
        "conditional_j2_rf7": 8,
        "flat_rf7": 2,
    }
    for name, n in rows.items():
        assert (run / "models" / name / "model.pt").exists()
        assert (run / "models" / name / "metrics.jsonl").read_text().count("\n") == n
    assert (run / "logs" / "train_lowpass.log").stat().st_size > 0
    assert (run / "benchmarks" / "synthesize.tsv").exists()


@pytest.mark.slow
def test_a_rerun_recomputes_nothing(tiny_run):
    _, config, _ = tiny_run
    again = snakemake("all", "--configfile", config, "--dry-run")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_a_changed_seed_reruns_every_rule_that_draws_from_it(tiny_run):
    _, config, _ = tiny_run
    again = snakemake("all", "--dry-run", "--configfile", config, "--config", "seed=1")
    assert again.returncode == 0, again.stderr[-4000:]
    out = again.stdout + again.stderr
    for rule in (
        "prepare_faces",
        "train_lowpass",
        "train_conditional",
        "train_flat",
        "evaluate_denoising",
        "synthesize",
        "synthesize_flat",
        "super_resolve",
        "inpaint",
    ):
        assert f"rule {rule}:" in out, rule


@pytest.mark.slow
def test_report_holds_every_figure(tiny_run):
    root, config, _ = tiny_run
    report = root / "report.html"
    done = snakemake("--configfile", config, "--report", report)
    assert done.returncode == 0, done.stderr[-4000:]
    assert report.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"wavelet": {"levls": 3}}, "levls"),
        ({"train": {"batch_size": "big"}}, "batch_size"),
        ({"data": {"size": 30}}, "not divisible"),
        ({"sample": {"rf": 11}}, "sample.rf"),
    ],
)
def test_a_bad_config_stops_before_any_job_naming_the_key(tmp_path, override, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(override | {"results": str(tmp_path)}))
    done = snakemake("all", "--configfile", config, "--dry-run")
    assert done.returncode != 0
    assert message in done.stdout + done.stderr
    assert not any(tmp_path.rglob("*.h5"))


@pytest.mark.slow
@pytest.mark.shared_data
def test_published_preset_runs_downstream_on_imported_networks(tmp_path, shared_data):
    """The 160 x 160 preset with the published networks, shrunk to 4 test images."""
    subset = shared_data / "celeba-subset"
    done, run = run_published_preset(
        "published160",
        tmp_path,
        shared_data,
        data={
            "celeba_zip": str(subset / "img_align_celeba.zip"),
            "celeba_partition": str(subset / "list_eval_partition.txt"),
            "max_images": {"train": 2, "valid": 2, "test": 4},
        },
        evaluate={"n_images": 4, "sigmas_255": [20, 100], "flat_rfs": [5]},
    )
    assert "rule train_" not in done.stdout + done.stderr  # imported, not trained
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000
    ours = pd.read_csv(run / "tables" / "reference_comparison.csv")
    flats = {f"flat_rf{rf}" for rf in (5, 9, 13, 23, 43)}
    assert set(ours["model"]) == flats | {"lowpass"}
    assert set(ours["sigma_255"]) == {20, 100, 260}
    assert (ours["n_images"] == 4).all()
    # 4 images against the release's 100-image means: close, not equal
    assert ours["difference_db"].abs().max() < 1.0, ours
    table = pd.read_csv(run / "tables" / "denoising.csv")
    ms = table[(table["model"] == "multiscale_rf9") & (table["sigma_255"] == 20)]
    assert float(ms["psnr_out"].iloc[0]) > float(ms["psnr_in"].iloc[0]) + 7


@pytest.mark.parametrize("flat", [True, False])
def test_flat_samples_are_drawn_only_where_there_are_flat_networks(tmp_path, flat):
    config = tmp_path / "flat.yaml"
    config.write_text(
        yaml.safe_dump({"results": str(tmp_path), "networks": {"flat": flat}})
    )
    done = snakemake("all", "--configfile", config, "--dry-run")
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout + done.stderr
    assert ("rule synthesize_flat:" in out) == flat
    assert ("rule train_flat:" in out) == flat
    assert "rule synthesize:" in out


@pytest.mark.slow
@pytest.mark.shared_data
def test_published320_preset_runs_on_a_folder_of_faces(tmp_path, shared_data):
    """The 320 x 320 preset (three levels, RF 13, no flat networks) on a folder of 6
    real faces: every stage runs on the imported networks, at 320 x 320."""
    import zipfile

    folder = tmp_path / "faces"
    folder.mkdir()
    with zipfile.ZipFile(shared_data / "celeba-subset" / "img_align_celeba.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[:6]
        for name in names:
            (folder / Path(name).name).write_bytes(z.read(name))
    _, run = run_published_preset(
        "published320",
        tmp_path,
        shared_data,
        data={
            "folder": str(folder),
            "split_fractions": [0.2, 0.2, 0.6],
            "max_images": {"train": 1, "valid": 1, "test": 2},
        },
        evaluate={"n_images": 2, "sigmas_255": [20], "batch_size": 2},
    )
    for name in set(FIGURES) - {"samples_flat"}:
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000, name
    assert not (run / "figures" / "samples_flat.png").exists()
    with h5py.File(run / "samples" / "synthesis.h5") as f:
        assert f["images"].shape == (1, 1, 320, 320)
        assert set(f["trace"]) == {
            "lowpass",
            "details j=1",
            "details j=2",
            "details j=3",
        }
    ours = pd.read_csv(run / "tables" / "reference_comparison.csv")
    assert set(ours["model"]) == {"lowpass"}
    assert ours["release"].str.contains("celebA_320x320_gray").all()
    table = pd.read_csv(run / "tables" / "denoising.csv")
    ms = table[table["model"] == "multiscale_rf13"]
    assert float(ms["psnr_out"].iloc[0]) > float(ms["psnr_in"].iloc[0]) + 7


def test_a_failing_job_writes_its_error_to_its_log(tmp_path):
    """Snakemake points at the rule's log; the error that stopped the job is there."""
    empty = tmp_path / "empty"
    empty.mkdir()
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "results": str(tmp_path),
                "data": {"source": "folder", "folder": str(empty)},
            }
        )
    )
    done = snakemake(tmp_path / "default" / "data" / "faces.h5", "--configfile", config)
    assert done.returncode != 0
    log = (tmp_path / "default" / "logs" / "prepare_faces.log").read_text()
    assert "ERROR" in log and str(empty) in log, log
    assert "Traceback" in log
    assert not (tmp_path / "default" / "data" / "faces.h5").exists()
