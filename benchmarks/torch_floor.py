"""PyTorch's floor for a GRU written as a loop of operators: ours against it
and against `torch.nn.GRU`.

Usage::

    KERAS_BACKEND=torch python benchmarks/torch_floor.py [--repeats 21]
        [--out results/torch_floor.json, beside this script]

The floor is the same recurrence as ours with nothing around it: one
matmul projecting every step's inputs, then per step one matmul of the
state and the gates' activations, in plain PyTorch operators, eagerly (as
Keras runs PyTorch): no Keras, no masks, no layer calls. Its training step
is the backward pass written out as ours is (a reverse loop of one matmul
per step, then one matmul per weight over every step; autograd of the
loop is slower) and a plain SGD update. `torch.nn.GRU` runs each
step as fused C++ kernels (or one oneDNN/MKL call), which operators called
one by one from Python cannot match; the floor says how far a loop of
operators can go, so a gap between ours and `torch.nn.GRU` splits into
what our engine adds (ours/floor) and what operators called from Python
cost (floor/torch.nn.GRU).

Shapes are the benchmark's base row: batch 32, 100 steps, 64 features, 128
units, a Dense(1) head, mean squared error; ours is
`benchmark.build_model(GRU, CONFIGS["base"])` through `predict_on_batch`
and `train_on_batch`, all timed interleaved in one process
(`benchmark.time_interleaved`), with the thread count recorded
(`OMP_NUM_THREADS`, 1 when unset).
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(HERE))


def floor_calls(torch, shape):
    """`{"predict", "train", "grads", "autograd"}`: the bare loop's
    calls, and its gradients written out and by autograd."""
    batch, steps, features, units = (
        shape["batch"],
        shape["steps"],
        shape["features"],
        shape["units"],
    )
    gen = torch.Generator().manual_seed(0)
    params = [
        (torch.randn(features, 3 * units, generator=gen) * 0.1).requires_grad_(),
        (torch.randn(units, 3 * units, generator=gen) * 0.1).requires_grad_(),
        torch.zeros(3 * units, requires_grad=True),
        torch.zeros(3 * units, requires_grad=True),
        (torch.randn(units, 1, generator=gen) * 0.1).requires_grad_(),
    ]
    kernel, recurrent, bias, recurrent_bias, head = params
    x = torch.randn(steps, batch, features, generator=gen)
    y = torch.randn(batch, 1, generator=gen)

    def run_forward(keep):
        """The forward loop; with `keep`, the values its backward pass
        needs, per step."""
        projected = torch.matmul(x, kernel) + bias  # every step at once
        h = torch.zeros(batch, units)
        kept = []
        for t in range(steps):
            x_zr, x_h = projected[t].split([2 * units, units], -1)
            h_zr, h_h = (h @ recurrent + recurrent_bias).split([2 * units, units], -1)
            zr = torch.sigmoid(x_zr + h_zr)
            z, r = zr.chunk(2, -1)
            hh = torch.tanh(x_h + r * h_h)
            if keep:
                kept.append((h, zr, hh, h_h))
            h = hh + z * (h - hh)
        return h, kept

    def predict():
        with torch.no_grad():
            run_forward(False)[0] @ head

    def written_out_grads():
        """The gradients of the loss by the forward loop, then the reverse
        loop written out (as ours: one matmul per step, the weights'
        gradients after it, each one matmul over every step)."""
        with torch.no_grad():
            h, kept = run_forward(True)
            out = h @ head
            d_out = 2.0 * (out - y) / y.numel()
            d_head = h.T @ d_out
            dh = d_out @ head.T
            d_recs, d_projs = [None] * steps, [None] * steps
            for t in reversed(range(steps)):
                h_prev, zr, hh, h_h = kept[t]
                z, r = zr.chunk(2, -1)
                d_a_h = dh * (1 - z) * (1 - hh * hh)
                d_zr = torch.cat([dh * (h_prev - hh), d_a_h * h_h], -1) * zr * (1 - zr)
                d_recs[t] = torch.cat([d_zr, d_a_h * r], -1)
                d_projs[t] = torch.cat([d_zr, d_a_h], -1)
                dh = dh * z + d_recs[t] @ recurrent.T
            h_prevs = torch.stack([k[0] for k in kept]).reshape(-1, units)
            d_rec = torch.stack(d_recs).reshape(-1, 3 * units)
            d_proj = torch.stack(d_projs).reshape(-1, 3 * units)
            return (
                x.reshape(-1, features).T @ d_proj,
                h_prevs.T @ d_rec,
                d_proj.sum(0),
                d_rec.sum(0),
                d_head,
            )

    def autograd_grads():
        """The same gradients by autograd of the loop (slower; the check)."""
        loss = ((run_forward(False)[0] @ head - y) ** 2).mean()
        return torch.autograd.grad(loss, params)

    def train():
        grads = written_out_grads()
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= 1e-3 * g

    return {
        "predict": predict,
        "train": train,
        "grads": written_out_grads,
        "autograd": autograd_grads,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "torch_floor.json")
    )
    args = parser.parse_args(argv)
    import keras
    import torch

    from keras_gru_plus import benchmark
    from keras_gru_plus.gru import GRU

    if keras.backend.backend() != "torch":
        raise SystemExit("torch_floor: run with KERAS_BACKEND=torch")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    config = benchmark.CONFIGS["base"]
    ours = benchmark.build_model(GRU, config)
    x, y = benchmark.make_data(config)
    floor = floor_calls(torch, benchmark._shape(config))
    rows = {}
    for i, mode in enumerate(("predict", "train")):
        print(f"[{i + 1}/2] {mode} ...", flush=True)
        (ours_call,) = benchmark.batch_calls([ours], x, y, mode)
        anchor = benchmark._torch_anchor(config, mode)
        times = benchmark.time_interleaved(
            [ours_call, floor[mode], anchor], repeats=args.repeats
        )
        t_ours, t_floor, t_torch = (1e3 * t for t in times)
        rows[mode] = {
            "ours_ms": t_ours,
            "floor_ms": t_floor,
            "torch_nn_gru_ms": t_torch,
            "ours_over_floor": t_ours / t_floor,
            "floor_over_torch": t_floor / t_torch,
            "ours_over_torch": t_ours / t_torch,
        }
    print(
        "\n| mode | ours ms | floor ms | torch.nn.GRU ms | ours/floor |"
        " floor/torch.nn.GRU | ours/torch.nn.GRU |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode, r in rows.items():
        print(
            f"| {mode} | {r['ours_ms']:.1f} | {r['floor_ms']:.1f} | "
            f"{r['torch_nn_gru_ms']:.1f} | {r['ours_over_floor']:.2f} | "
            f"{r['floor_over_torch']:.2f} | {r['ours_over_torch']:.2f} |"
        )
    out = os.path.relpath(os.path.abspath(args.out), os.path.dirname(HERE))
    report = {
        "args": dict(vars(args), out=out),
        "machine": benchmark.machine_info(),
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
