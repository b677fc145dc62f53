"""The published networks: registry, fetch/locate, loading, conventions, measured PSNR.

Tests marked ``shared_data`` read ../shared/data/published-denoisers (and, for the
measurement, ../shared/data/celeba-subset); they skip where it is absent.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import shutil
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loopback import serving

from msprior.download import ChecksumError, DownloadError
from msprior.networks import BFCNN, NetworkSpec, load_model
from msprior.published import (
    CONVENTIONS,
    DEFAULT_BASE_URL,
    PUBLISHED_COMMIT,
    PublishedModel,
    check_conventions,
    fetch_published,
    find_published,
    import_published,
    load_published,
    locate_published,
    published_models,
)
from msprior.wavelets import wavedec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXTURE = Path(__file__).resolve().parent / "data" / "published_outputs.npz"
SETTING = "celebA_160x160_gray"
FLAT_RF5 = "flat/celebA_160x160_gray/noise_range_0to255_RF_5x5/model.pt"
FLAT_RF9 = "flat/celebA_160x160_gray/noise_range_0to255_RF_9x9/model.pt"
COND_RF5 = "multi_scale/celebA_160x160_gray/noise_range_0to255_RF_5x5_scale_0/model.pt"
LOWPASS = "multi_scale/celebA_160x160_gray/noise_range_0to255_RF_40x40_low/model.pt"


@pytest.fixture(scope="module")
def published_dir() -> Path:
    folder = SHARED / "published-denoisers"
    if not folder.is_dir():
        pytest.skip(f"the published networks are not at {folder}")
    return folder


def _forward_reference(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The published architecture evaluated layer by layer from a raw state dict.

    As in the authors' code: the first convolution is linear (no ReLU); each middle
    one is followed by division by ``running_sd``, multiplication by ``gammas`` and a
    ReLU; the last is linear.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    n_conv = len([k for k in state if k.startswith("conv_layers.")])
    for i in range(n_conv):
        weight = state[f"conv_layers.{i}.weight"]
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
        if 0 < i < n_conv - 1:
            x = x / state[f"BN_layers.{i - 1}.running_sd"]
            x = x * state[f"BN_layers.{i - 1}.gammas"]
            x = F.relu(x)
    return x


def _bfcnn_first_layer_is_linear() -> bool:
    """Probe msprior.networks.BFCNN: is there no ReLU after its first convolution?"""
    net = BFCNN(NetworkSpec("flat", depth=2, width=1, rf=5)).eval()
    with torch.no_grad():
        for conv, sign in zip(net.conv_layers, (-1.0, 1.0), strict=True):
            conv.weight.zero_()
            conv.weight[..., 1, 1] = sign  # a centred delta: -x, then x
        out = net(torch.ones(1, 1, 5, 5))
    return bool(out[0, 0, 2, 2] < 0)  # relu(-1) would give 0


# The released weights were trained with a linear first layer (the authors'
# BF_CNN_RF and BF_CNN with first_layer_linear=True). Until BFCNN matches, its outputs
# differ; these tests pass as soon as it does (strict: then the marker must go).
needs_linear_first_layer = pytest.mark.xfail(
    not _bfcnn_first_layer_is_linear(),
    reason="msprior.networks.BFCNN applies a ReLU after the first convolution; the "
    "published networks expect a linear first layer",
    strict=True,
)


def _model_at(relpath: str) -> PublishedModel:
    (model,) = [m for m in published_models() if m.relpath == relpath]
    return model


def _save_as_released(network: BFCNN, path: Path) -> None:
    """Write a state dict the way the release does: keys under ``module.``."""
    state = {f"module.{k}": v for k, v in network.state_dict().items()}
    torch.save(state, path)


# --- registry and conventions (no shared data needed) ------------------------------


def test_registry_maps_every_released_file_to_a_model_identity():
    models = published_models()
    assert len(models) == 20
    for m in models:
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256)
        scale = re.search(r"_scale_(\d)/", m.relpath)
        if m.role == "conditional":
            assert m.level == int(scale.group(1)) + 1  # release scale 0 = our j = 1
            assert m.spec == NetworkSpec("conditional", depth=21, width=64, rf=m.rf)
        elif m.role == "lowpass":
            assert "RF_40x40_low" in m.relpath
            assert m.spec == NetworkSpec("lowpass", depth=20, width=64, rf=41)
            assert m.level == CONVENTIONS[m.setting]["levels"]
        else:
            assert m.level is None and m.relpath.startswith("flat/")
            assert f"RF_{m.rf}x{m.rf}/" in m.relpath
    assert {m.rf for m in published_models(setting=SETTING, role="flat")} == {
        5,
        9,
        13,
        23,
        43,
    }
    assert len(published_models(setting="celebA_320x320_gray")) == 4
    assert PUBLISHED_COMMIT in DEFAULT_BASE_URL


def test_find_published_returns_one_model_or_a_clear_error():
    m = find_published(SETTING, "conditional", rf=9, level=2)
    assert m.relpath.endswith("RF_9x9_scale_1/model.pt")
    with pytest.raises(ValueError, match="2 published networks match"):
        find_published(SETTING, "conditional", rf=9)
    with pytest.raises(ValueError, match="no published networks match"):
        find_published(SETTING, "flat", rf=7)
    with pytest.raises(ValueError, match="unknown published setting"):
        find_published("celebA_64x64", "flat", rf=5)


def _paper_config(setting: str) -> dict:
    c = CONVENTIONS[setting]
    keys = ("size", "levels", "wavelet", "crop", "depth", "width", "lowpass_depth")
    return {k: c[k] for k in keys}


@pytest.mark.parametrize("setting", sorted(CONVENTIONS))
def test_check_conventions_accepts_the_papers_settings(setting):
    check_conventions(setting, **_paper_config(setting))
    config = _paper_config(setting) | {"wavelet": "db1"}  # PyWavelets' name for Haar
    if config["crop"] is not None:
        config["crop"] = list(config["crop"])  # as YAML gives it
    check_conventions(setting, **config)


def test_check_conventions_names_every_contradiction():
    config = _paper_config(SETTING) | {"size": 128, "levels": 3, "crop": (0, 0, 0, 0)}
    with pytest.raises(ValueError) as info:
        check_conventions(SETTING, **config)
    msg = str(info.value)
    assert "size=128" in msg and "levels=3" in msg and "crop=(0, 0, 0, 0)" in msg
    assert "wavelet" not in msg and "depth" not in msg
    with pytest.raises(ValueError, match="lowpass_depth=21"):
        check_conventions(SETTING, **(_paper_config(SETTING) | {"lowpass_depth": 21}))
    with pytest.raises(ValueError, match="wavelet='db2'"):
        check_conventions(SETTING, **(_paper_config(SETTING) | {"wavelet": "db2"}))
    for name in ("nope", "bior2.2"):  # unknown, and not orthogonal: named, not raised
        with pytest.raises(ValueError, match=f"wavelet='{name}'.*expect 'haar'"):
            check_conventions(SETTING, **(_paper_config(SETTING) | {"wavelet": name}))
    with pytest.raises(ValueError, match="unknown published setting"):
        check_conventions("celeba", **_paper_config(SETTING))


# --- loading, on synthetic files in the release's format ---------------------------


def test_load_published_reads_a_module_prefixed_state_dict(tmp_path):
    torch.manual_seed(0)
    spec = NetworkSpec("flat", depth=6, width=8, rf=7)
    network = BFCNN(spec).eval()
    path = tmp_path / "model.pt"
    _save_as_released(network, path)
    loaded = load_published(path, spec)
    assert not loaded.training
    x = torch.rand(2, 1, 10, 10)
    torch.testing.assert_close(loaded(x), network(x), rtol=0, atol=0)


def test_load_published_names_the_key_that_does_not_fit(tmp_path):
    path = tmp_path / "model.pt"
    _save_as_released(BFCNN(NetworkSpec("flat", depth=6, width=8, rf=7)), path)
    with pytest.raises(ValueError, match=r"conv_layers\.\d+\.weight has shape"):
        load_published(path, NetworkSpec("flat", depth=6, width=8, rf=11))
    with pytest.raises(ValueError, match=r"conv_layers\.0\.weight.*4 -> 3"):
        # the reverse: a conditional file into a flat spec
        cond = tmp_path / "cond.pt"
        _save_as_released(BFCNN(NetworkSpec("conditional", 6, 8, 7)), cond)
        load_published(cond, NetworkSpec("flat", depth=6, width=8, rf=7))
    with pytest.raises(ValueError, match="missing conv_layers.6.weight"):
        load_published(path, NetworkSpec("flat", depth=7, width=8, rf=7))


def test_load_published_refuses_a_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"step": 3}, path)
    with pytest.raises(ValueError, match="state dict of tensors"):
        load_published(path, NetworkSpec("flat", depth=6, width=8, rf=7))


def test_import_published_refuses_an_unreleased_file(tmp_path):
    path = tmp_path / "model.pt"
    spec = NetworkSpec("flat", depth=6, width=8, rf=7)
    _save_as_released(BFCNN(spec), path)
    with pytest.raises(ValueError, match="not one of the published network files"):
        import_published(path, spec, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


# --- the released files -------------------------------------------------------------


@pytest.mark.shared_data
def test_package_checksums_match_the_release(published_dir):
    lines = (published_dir / "SHA256SUMS").read_text().split("\n")
    release = {p.removeprefix("./"): h for h, p in (ln.split() for ln in lines if ln)}
    assert release == {m.relpath: m.sha256 for m in published_models()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def release_server(tmp_path, published_dir):
    """Serves a tmp copy of two released files, and a third file with wrong bytes."""
    www = tmp_path / "www" / "denoisers"
    for relpath in (FLAT_RF5, COND_RF5):
        (www / relpath).parent.mkdir(parents=True)
        shutil.copyfile(published_dir / relpath, www / relpath)
    (www / FLAT_RF9).parent.mkdir(parents=True)
    shutil.copyfile(published_dir / FLAT_RF5, www / FLAT_RF9)  # wrong checksum
    handler = partial(_QuietHandler, directory=str(tmp_path / "www"))
    with serving(handler, http.server.ThreadingHTTPServer) as srv:
        srv.requests = []
        yield srv, f"{srv.url}/denoisers"


@pytest.mark.shared_data
def test_fetch_published_downloads_and_verifies(release_server, tmp_path):
    srv, base_url = release_server
    dest = tmp_path / "cache"
    got = fetch_published(dest, [FLAT_RF5, COND_RF5], base_url=base_url, timeout=10)
    assert got == {FLAT_RF5: dest / FLAT_RF5, COND_RF5: dest / COND_RF5}
    assert locate_published(dest, got) == got
    n = len(srv.requests)
    fetch_published(dest, [FLAT_RF5], base_url=base_url, timeout=10)
    assert len(srv.requests) == n  # present and verified: no request


@pytest.mark.shared_data
def test_fetch_published_refuses_a_file_with_the_wrong_checksum(
    release_server, tmp_path
):
    _, base_url = release_server
    dest = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="sha256") as info:
        fetch_published(dest, [FLAT_RF9], base_url=base_url, timeout=10)
    assert find_published(SETTING, "flat", rf=9).sha256 in str(info.value)
    assert not list((dest / FLAT_RF9).parent.iterdir())


@pytest.mark.shared_data
def test_fetch_published_reports_a_missing_file(release_server, tmp_path):
    _, base_url = release_server
    with pytest.raises(DownloadError, match="404") as info:
        fetch_published(tmp_path / "cache", [LOWPASS], base_url=base_url, timeout=10)
    assert "holds no copy" in str(info.value)
    assert "point networks.published_dir at it" in str(info.value)
    with pytest.raises(ValueError, match="not a published model file"):
        fetch_published(tmp_path / "cache", ["flat/x/model.pt"], base_url=base_url)


@pytest.mark.shared_data
def test_locate_published_verifies_and_names_what_is_wrong(published_dir, tmp_path):
    assert locate_published(published_dir, [FLAT_RF5]) == {
        FLAT_RF5: published_dir / FLAT_RF5
    }
    repo = tmp_path / "checkout"
    (repo / "denoisers" / FLAT_RF5).parent.mkdir(parents=True)
    shutil.copyfile(published_dir / FLAT_RF5, repo / "denoisers" / FLAT_RF5)
    assert locate_published(repo, [FLAT_RF5])[FLAT_RF5].read_bytes()  # repo root
    with pytest.raises(FileNotFoundError, match="RF_9x9"):
        locate_published(repo, [FLAT_RF5, FLAT_RF9])
    (repo / "denoisers" / FLAT_RF9).parent.mkdir(parents=True)
    shutil.copyfile(published_dir / FLAT_RF5, repo / "denoisers" / FLAT_RF9)
    with pytest.raises(ChecksumError, match="RF_9x9"):
        locate_published(repo, [FLAT_RF9])


@pytest.mark.shared_data
@pytest.mark.parametrize("model", published_models(), ids=lambda m: m.relpath)
def test_every_published_file_loads_into_its_spec(published_dir, model):
    network = load_published(published_dir / model.relpath, model.spec)
    assert not network.training
    n_params = sum(p.numel() for p in network.parameters())
    assert n_params > 80_000


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "relpath, spec, key",
    [
        (FLAT_RF5, NetworkSpec("flat", rf=9), "conv_layers.8.weight"),
        (COND_RF5, NetworkSpec("flat", rf=5), "conv_layers.0.weight"),
        (FLAT_RF5, NetworkSpec("conditional", rf=5), "conv_layers.0.weight"),
        (LOWPASS, NetworkSpec("lowpass", depth=21, rf=43), "conv_layers.20.weight"),
    ],
)
def test_a_wrong_spec_is_a_clear_error(published_dir, relpath, spec, key):
    with pytest.raises(ValueError, match=re.escape(key)) as info:
        load_published(published_dir / relpath, spec)
    assert relpath in str(info.value)


@needs_linear_first_layer
@pytest.mark.shared_data
@pytest.mark.parametrize("relpath", [FLAT_RF5, COND_RF5, LOWPASS])
def test_loaded_network_equals_a_layer_by_layer_evaluation(published_dir, relpath):
    model = published_models()[[m.relpath for m in published_models()].index(relpath)]
    network = load_published(published_dir / relpath, model.spec)
    state = torch.load(published_dir / relpath, map_location="cpu", weights_only=True)
    x = torch.rand(
        2, model.spec.in_channels, 20, 20, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        cond, noisy = (x[:, :1], x[:, 1:]) if model.role == "conditional" else (None, x)
        got = network(noisy, cond=cond)
        want = _forward_reference(state, x)
    assert got.shape == (2, model.spec.out_channels, 20, 20)
    assert want.abs().max() > 1e-3  # not a trivially zero comparison
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _fixture_cases() -> list[str]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return sorted(
            k.removeprefix("output_") for k in data if k.startswith("output_")
        )


def _run(network: BFCNN, x: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(x)
    cond, noisy = (
        (x[:, :1], x[:, 1:]) if network.spec.role == "conditional" else (None, x)
    )
    with torch.no_grad():
        return network(noisy, cond=cond).numpy()


def _fixture_case(name: str) -> tuple[str, np.ndarray, np.ndarray, str]:
    """relpath, input, stored output and sha256 of one stored case."""
    with np.load(FIXTURE, allow_pickle=False) as data:
        x = data[f"input_{data[f'input_of_{name}']}"]
        return (
            str(data[f"relpath_{name}"]),
            x,
            data[f"output_{name}"],
            str(data[f"sha256_{name}"]),
        )


@pytest.mark.shared_data
@pytest.mark.parametrize("name", _fixture_cases())
def test_stored_outputs_match_the_layer_by_layer_evaluation(published_dir, name):
    relpath, x, want, sha256 = _fixture_case(name)
    assert _model_at(relpath).sha256 == sha256
    state = torch.load(published_dir / relpath, map_location="cpu", weights_only=True)
    with torch.no_grad():
        got = _forward_reference(state, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@needs_linear_first_layer
@pytest.mark.shared_data
@pytest.mark.parametrize("name", _fixture_cases())
def test_loader_reproduces_the_stored_outputs(published_dir, name):
    relpath, x, want, _ = _fixture_case(name)
    network = load_published(published_dir / relpath, _model_at(relpath).spec)
    np.testing.assert_allclose(_run(network, x), want, rtol=0, atol=1e-5)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", _fixture_cases())
def test_import_published_then_load_model_gives_the_same_network(
    published_dir, tmp_path, name
):
    relpath, x, _, sha256 = _fixture_case(name)
    model = _model_at(relpath)
    network = load_published(published_dir / relpath, model.spec)
    out = import_published(published_dir / relpath, model.spec, tmp_path / "m.pt")
    imported = load_model(out)
    assert imported.spec == model.spec
    np.testing.assert_array_equal(_run(imported, x), _run(network, x))
    extra = torch.load(out, weights_only=True)["extra"]
    assert extra["source"] == "published"
    assert (extra["relpath"], extra["sha256"]) == (relpath, sha256)


@pytest.mark.shared_data
def test_import_published_refuses_a_spec_other_than_the_registrys(
    published_dir, tmp_path
):
    with pytest.raises(ValueError, match="RF_5x5"):
        import_published(
            published_dir / FLAT_RF5, NetworkSpec("flat", rf=9), tmp_path / "m.pt"
        )
    assert not (tmp_path / "m.pt").exists()


# --- measured PSNR on real faces ----------------------------------------------------


@pytest.fixture(scope="module")
def celeba_faces() -> torch.Tensor:
    """First 100 test images by name: grey = mean RGB, rows 29:189, cols 9:169."""
    from PIL import Image

    folder = SHARED / "celeba-subset"
    if not folder.is_dir():
        pytest.skip(f"the CelebA subset is not at {folder}")
    split = (folder / "list_eval_partition.txt").read_text().split("\n")
    names = sorted(ln.split()[0] for ln in split if ln.endswith(" 2"))[:100]
    faces = []
    with zipfile.ZipFile(folder / "img_align_celeba.zip") as zf:
        for name in names:
            with Image.open(io.BytesIO(zf.read(f"img_align_celeba/{name}"))) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
            faces.append(rgb.mean(axis=-1)[29:189, 9:169] / 255)
    return torch.from_numpy(np.stack(faces)).float()[:, None]  # (100, 1, 160, 160)


def _mean_denoised_psnr(network, clean: torch.Tensor, sigma: float) -> float:
    from msprior.metrics import psnr
    from msprior.networks import denoise

    g = torch.Generator().manual_seed(0)
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    with torch.no_grad():
        denoised = torch.cat([denoise(network, y) for y in noisy.split(25)])
    return psnr(denoised, clean, data_range=1.0).mean().item()


def _reference(published_dir: Path, model: PublishedModel) -> dict[str, float]:
    text = (published_dir / "reference_psnr.json").read_text()
    return json.loads(text)[model.folder]


@needs_linear_first_layer
@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("rf", [5, 43])
def test_flat_networks_reproduce_the_reference_psnr(published_dir, celeba_faces, rf):
    model = find_published(SETTING, "flat", rf=rf)
    network = load_published(published_dir / model.relpath, model.spec)
    assert celeba_faces.shape == (100, 1, 160, 160)
    for sigma_255 in (20, 100):
        got = _mean_denoised_psnr(network, celeba_faces, sigma_255 / 255)
        want = _reference(published_dir, model)[str(sigma_255)]
        assert abs(got - want) < 0.3, (rf, sigma_255, got, want)


@needs_linear_first_layer
@pytest.mark.slow
@pytest.mark.shared_data
def test_lowpass_network_reproduces_the_reference_psnr(published_dir, celeba_faces):
    # The release measured the low-pass on PyWavelets' orthonormal coefficients
    # (4 x our local mean after two levels), noise of std sigma added to them, PSNR
    # with peak 1. In our units: noise sigma / 4 (pixel noise), PSNR - 20 log10(4).
    model = find_published(SETTING, "lowpass")
    network = load_published(published_dir / model.relpath, model.spec)
    low, _ = wavedec(celeba_faces, 2)  # (100, 1, 40, 40), local means
    gain = CONVENTIONS[SETTING]["reference_lowpass_gain"]
    for sigma_255 in (20, 100):
        got = _mean_denoised_psnr(network, gain * low, sigma_255 / 255)
        want = _reference(published_dir, model)[str(sigma_255)]
        assert abs(got - want) < 0.3, (sigma_255, got, want)
