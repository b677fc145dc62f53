import pytest
import torch

from msprior.networks import (
    BFCNN,
    NetworkSpec,
    denoise,
    kernel_layout,
    load_model,
    receptive_field,
    save_model,
)

PAPER_RFS = [5, 9, 13, 23, 43]


@pytest.mark.parametrize(
    ("role", "counts"),
    [
        ("conditional", [83_072, 148_608, 214_144, 377_984, 705_664]),
        ("flat", [80_192, 145_728, 211_264, 375_104, 702_784]),
    ],
)
def test_parameter_counts_of_the_paper(role, counts):
    got = [
        sum(p.numel() for p in BFCNN(NetworkSpec(role, 21, 64, rf)).parameters())
        for rf in PAPER_RFS
    ]
    assert got == counts


def test_lowpass_parameter_count():
    net = BFCNN(NetworkSpec("lowpass", 20, 64, 41))
    assert sum(p.numel() for p in net.parameters()) == 665_856


@pytest.mark.parametrize(
    ("depth", "rf"), [(21, r) for r in PAPER_RFS] + [(7, 5), (7, 9), (9, 11), (5, 11)]
)
def test_layout_gives_the_receptive_field(depth, rf):
    layout = kernel_layout(depth, rf)
    assert len(layout) == depth and layout[0] == layout[-1] == 3
    assert receptive_field(layout) == rf


@pytest.mark.parametrize(("role", "rf"), [("flat", 5), ("flat", 9), ("conditional", 9)])
def test_measured_receptive_field(role, rf):
    """The gradient of the centre output is non-zero exactly inside the square."""
    spec = NetworkSpec(role, 7, 8, rf)
    net = BFCNN(spec).double().eval()
    n, c = 21, 10
    x = torch.rand(
        1,
        3 if role == "conditional" else 1,
        n,
        n,
        dtype=torch.float64,
        requires_grad=True,
    )
    cond = (
        torch.rand(1, 1, n, n, dtype=torch.float64) if role == "conditional" else None
    )
    net(x, cond=cond)[0, 0, c, c].backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows, cols = support.nonzero().unbind(1)
    half = rf // 2
    assert (rows.min(), rows.max()) == (c - half, c + half)
    assert (cols.min(), cols.max()) == (c - half, c + half)


@pytest.mark.parametrize("role", ["flat", "lowpass", "conditional"])
def test_bias_free_means_homogeneous(role):
    spec = NetworkSpec(role, 6, 16, 9)
    net = BFCNN(spec).double()
    net.train()
    for _ in range(3):  # move the running statistics away from their start
        net(
            torch.rand(
                4, 3 if role == "conditional" else 1, 12, 12, dtype=torch.float64
            ),
            cond=torch.rand(4, 1, 12, 12, dtype=torch.float64)
            if role == "conditional"
            else None,
        )
    net.eval()
    x = torch.randn(2, 3 if role == "conditional" else 1, 12, 12, dtype=torch.float64)
    cond = (
        torch.randn(2, 1, 12, 12, dtype=torch.float64)
        if role == "conditional"
        else None
    )
    a = 3.7
    scaled = net(a * x, cond=None if cond is None else a * cond)
    torch.testing.assert_close(scaled, a * net(x, cond=cond), rtol=1e-10, atol=1e-12)
    assert not any(n.endswith("bias") for n, _ in net.named_parameters())


def test_interface_and_denoise_helper():
    net = BFCNN(NetworkSpec("conditional", 4, 8, 5)).eval()
    noisy, cond = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    out = denoise(net, noisy, cond)
    torch.testing.assert_close(out, noisy - net(noisy, cond=cond))
    with pytest.raises(ValueError, match="needs `cond`"):
        net(noisy)
    with pytest.raises(ValueError, match="takes no `cond`"):
        BFCNN(NetworkSpec("flat", 4, 8, 5))(torch.rand(1, 1, 8, 8), cond=cond)


def test_save_and_load_round_trip(tmp_path):
    net = BFCNN(NetworkSpec("flat", 5, 8, 7)).eval()
    save_model(tmp_path / "m.pt", net, step=12)
    back = load_model(tmp_path / "m.pt")
    x = torch.rand(1, 1, 10, 10)
    torch.testing.assert_close(back(x), net(x))
    assert back.spec == net.spec


def test_load_refuses_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model file"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "notes.pt").write_text("not a torch file\n")
    with pytest.raises(ValueError, match="notes.pt is not a readable torch file"):
        load_model(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt is not a readable torch file"):
        load_model(tmp_path / "cut.pt")


def test_bad_specs_are_named():
    with pytest.raises(ValueError, match="unknown role"):
        NetworkSpec("global")
    with pytest.raises(ValueError, match="largest field"):
        NetworkSpec("flat", depth=5, width=8, rf=13)
    with pytest.raises(ValueError, match="odd"):
        NetworkSpec("flat", depth=5, width=8, rf=6)


@pytest.mark.parametrize("role", ["flat", "conditional"])
def test_folded_batch_norm_computes_the_same_function(role):
    spec = NetworkSpec(role, 6, 16, 9)
    net = BFCNN(spec).double()
    cin = 3 if role == "conditional" else 1
    cond = (
        torch.rand(8, 1, 12, 12, dtype=torch.float64) if role == "conditional" else None
    )
    for _ in range(3):
        net(torch.randn(8, cin, 12, 12, dtype=torch.float64), cond=cond)
    with torch.no_grad():
        for bn in net.BN_layers:
            bn.gammas.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(8, cin, 12, 12, dtype=torch.float64)
    before = net(x, cond=cond)
    net.fold_batch_norm_()
    torch.testing.assert_close(net(x, cond=cond), before, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="cannot be trained"):
        net.train()


def test_training_mode_matches_the_unfused_batch_norm_in_value_and_gradient():
    torch.manual_seed(3)
    net = BFCNN(NetworkSpec("conditional", 5, 8, 7)).double().train()
    with torch.no_grad():
        for bn in net.BN_layers:
            bn.gammas.uniform_(0.5, 2.0)
    noisy = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    cond = torch.rand(4, 1, 10, 10, dtype=torch.float64)

    def unfused(x):  # the layer-by-layer definition, batch norm then ReLU
        x = net.conv_layers[0](torch.cat([cond, x], dim=1))
        for conv, bn in zip(net.conv_layers[1:-1], net.BN_layers, strict=True):
            z = conv(x)
            sd = torch.sqrt(z.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + bn.eps)
            x = torch.relu(z / sd * bn.gammas)
        return net.conv_layers[-1](x)

    want = unfused(noisy)
    grads_want = torch.autograd.grad(want.pow(2).sum(), list(net.parameters()))
    running = [bn.running_sd.clone() for bn in net.BN_layers]
    got = net(noisy, cond=cond)
    grads_got = torch.autograd.grad(got.pow(2).sum(), list(net.parameters()))
    torch.testing.assert_close(got, want)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b)
    assert all(
        not torch.equal(bn.running_sd, r)
        for bn, r in zip(net.BN_layers, running, strict=True)
    )


def test_inference_loading_puts_flat_networks_channels_last_with_the_same_output(
    tmp_path,
):
    from msprior.pipeline import _load_models

    torch.manual_seed(5)
    paths = {}
    for name, role in [("flat_rf7", "flat"), ("lowpass", "lowpass")]:
        net = BFCNN(NetworkSpec(role, 5, 8, 7))
        with torch.no_grad():
            for bn in net.BN_layers:
                bn.gammas.uniform_(0.5, 2.0)
                bn.running_sd.uniform_(0.5, 2.0)
        save_model(tmp_path / f"{name}.pt", net.eval(), step=1)
        paths[name] = tmp_path / f"{name}.pt"
    nets = _load_models(paths, "cpu")
    x = torch.rand(3, 1, 24, 24)
    with torch.no_grad():
        for name, net in nets.items():
            # 8 -> 8 channels, 3 x 3: one channel or a 1 x 1 kernel fits both layouts
            weight = next(
                c.weight for c in net.conv_layers if c.weight.shape[1:] == (8, 3, 3)
            )
            assert weight.is_contiguous(memory_format=torch.channels_last) == (
                name == "flat_rf7"
            )
            torch.testing.assert_close(net(x), load_model(paths[name])(x))
