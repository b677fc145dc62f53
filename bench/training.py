"""Row ``training``: achieved GFLOP/s of a training step over fp32 matmul GFLOP/s.

The step is the body of :func:`msprior.training.train`: :func:`make_batch`, the
network, :func:`loss_fn`, backward, an Adam step. Its useful work is counted as the
convolutions' multiply-adds, ``2 * conv parameters * h * w`` per image forward and
three times that for forward and backward; batch norm, ReLU and Adam are not counted.
The denominator is a square fp32 ``torch.mm`` timed in the same process, interleaved
with the steps, at the same number of threads.

Two further figures say what bounds the ratio: the same step without batch norm (the
convolutions and ReLUs alone: the ceiling if batch norm were free) and the step with
the fused batch norm of :mod:`bench.fused_bn` (a proposed change). A torch profile
of one step gives the share of each operator.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.common import interleaved_best
from bench.fused_bn import fused_forward
from msprior.config import TrainConfig
from msprior.networks import BFCNN, NetworkSpec
from msprior.training import Task, load_arrays, loss_fn, make_batch


def conv_flops(net: BFCNN, h: int, w: int) -> int:
    """Multiply-adds x 2 of every convolution, one image of h x w, forward."""
    return 2 * sum(conv.weight.numel() for conv in net.conv_layers) * h * w


def _matmul(n: int):
    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)


def _stepper(task: Task, data, cfg: TrainConfig, net: BFCNN, forward):
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    state = {"step": 0}

    def step() -> float:
        clean, cond, noise = make_batch(task, data, cfg, 0, state["step"])
        estimate = forward(net, clean + noise, cond)
        loss = loss_fn(estimate, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        return loss.item()

    return step


def _package_forward(net, noisy, cond):
    return net(noisy, cond=cond)


def _networks(spec: NetworkSpec) -> dict[str, BFCNN]:
    torch.manual_seed(0)
    base = BFCNN(spec).train()
    nets = {name: BFCNN(spec).train() for name in ("fused", "no_batchnorm")}
    for net in nets.values():
        net.load_state_dict(base.state_dict())
    nets["no_batchnorm"].folded = True  # the forward then skips batch norm
    return {"package": base, **nets}


def profile_shares(step, top: int = 8) -> list[dict]:
    """Operators of one step by own CPU time, with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "share": round(e.self_cpu_time_total / total, 3)}
        for e in events[:top]
    ]


def step_figures(
    wavelets_path: Path,
    *,
    spec: NetworkSpec,
    level: int = 1,
    batch_size: int = 16,
    threads: tuple[int, ...] = (1,),
    repeats: int = 3,
    matmul_n: int = 1024,
    profile: bool = True,
) -> dict:
    """GFLOP/s of a training step over matmul GFLOP/s, per number of threads.

    Returns
    -------
    dict
        Per thread count ``t``: ``t{t}`` -> {``matmul_gflops``, ``step_s``,
        ``gflops``, ``ratio`` and the same for ``fused`` and ``no_batchnorm``};
        plus the band size, batch size, FLOPs per step and, with ``profile``, the
        operator shares of one package step at the first thread count.
    """
    task = Task(spec, level)
    data = load_arrays(task, wavelets_path, "train")
    cfg = TrainConfig(batch_size=batch_size)
    clean, _, _ = make_batch(task, data, cfg, 0, 0)
    h, w = clean.shape[-2:]
    nets = _networks(spec)
    flops = 3 * conv_flops(nets["package"], h, w) * len(clean)
    forwards = {
        "package": _package_forward,
        "fused": fused_forward,
        "no_batchnorm": _package_forward,
    }
    steps = {k: _stepper(task, data, cfg, nets[k], forwards[k]) for k in nets}
    mm_flops = 2 * matmul_n**3
    result = {
        "band": f"{h} x {w}",
        "batch": len(clean),
        "gflop_per_step": round(flops / 1e9, 2),
        "conv_params": sum(c.weight.numel() for c in nets["package"].conv_layers),
    }
    before = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            best = interleaved_best({"matmul": _matmul(matmul_n), **steps}, repeats)
            mm = mm_flops / best["matmul"] / 1e9
            row = {"matmul_gflops": round(mm, 1)}
            for name in steps:
                gflops = flops / best[name] / 1e9
                row[name] = {
                    "step_s": round(best[name], 3),
                    "gflops": round(gflops, 1),
                    "ratio": round(gflops / mm, 3),
                }
            result[f"t{t}"] = row
        if profile:
            torch.set_num_threads(threads[0])
            result["profile_top"] = profile_shares(steps["package"])
    finally:
        torch.set_num_threads(before)
    return result
