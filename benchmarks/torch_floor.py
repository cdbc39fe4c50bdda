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
cost (floor/torch.nn.GRU). A second floor calls the same loop's operators
through `keras.ops`, as our engine must (the layer's math is `keras.ops`
only): the difference between the two floors is Keras' dispatch. Ours
is timed twice: through `predict_on_batch` and `train_on_batch`, as the
benchmark times it, and its model alone (called on a tensor under
`no_grad`, or forward and autograd's backward pass without an optimizer
step): the difference is Keras' own step around the model (data
conversion, loss, optimizer), which a bare loop does not pay.

Shapes are the benchmark's base row: batch 32, 100 steps, 64 features, 128
units, a Dense(1) head, mean squared error; ours is
`benchmark.build_model(GRU, CONFIGS["base"])` through `predict_on_batch`
and `train_on_batch`, all timed interleaved in one process
(`benchmark.time_interleaved`), with the thread count recorded
(`OMP_NUM_THREADS`, 1 when unset).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import results_file  # noqa: E402


def operators(torch, keras_ops=False):
    """The operators the floor calls: PyTorch's own, or `keras.ops` (what
    our engine calls, each through Keras' conversion and dispatch) on the
    same tensors. Arithmetic (`+`, `*`, `-`) and slicing are PyTorch's in
    both, as in our engine on PyTorch."""
    if keras_ops:
        from keras import ops as lib

        cat, total, transpose = lib.concatenate, lib.sum, lib.transpose
    else:
        lib, cat, total, transpose = torch, torch.cat, torch.sum, torch.t
    return dict(
        mm=lib.matmul,
        sigmoid=lib.sigmoid,
        tanh=lib.tanh,
        cat=lambda xs: cat(xs, -1),
        stack=lib.stack,
        sum0=lambda a: total(a, 0),
        reshape=lib.reshape,
        transpose=transpose,
        zeros=lib.zeros,
    )


def floor_calls(torch, shape, keras_ops=False):
    """`{"predict", "train", "grads", "autograd"}`: the bare loop's
    calls, and its gradients written out and by autograd, with the
    operators of `operators(torch, keras_ops)`."""
    o = operators(torch, keras_ops)
    mm, cat = o["mm"], o["cat"]
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
    n = 2 * units

    def run_forward(keep):
        """The forward loop; with `keep`, the values its backward pass
        needs, per step."""
        projected = mm(x, kernel) + bias  # every step at once
        h = o["zeros"]((batch, units))
        kept = []
        for t in range(steps):
            x_t = projected[t]
            rec = mm(h, recurrent) + recurrent_bias
            zr = o["sigmoid"](x_t[:, :n] + rec[:, :n])
            z, r = zr[:, :units], zr[:, units:]
            h_h = rec[:, n:]
            hh = o["tanh"](x_t[:, n:] + r * h_h)
            if keep:
                kept.append((h, zr, hh, h_h))
            h = hh + z * (h - hh)
        return h, kept

    def predict():
        with torch.no_grad():
            mm(run_forward(False)[0], head)

    def written_out_grads():
        """The gradients of the loss by the forward loop, then the reverse
        loop written out (as ours: one matmul per step, the weights'
        gradients after it, each one matmul over every step)."""
        with torch.no_grad():
            h, kept = run_forward(True)
            d_out = 2.0 * (mm(h, head) - y) / y.numel()
            d_head = mm(o["transpose"](h), d_out)
            dh = mm(d_out, o["transpose"](head))
            recurrent_t = o["transpose"](recurrent)
            d_recs, d_projs = [None] * steps, [None] * steps
            for t in reversed(range(steps)):
                h_prev, zr, hh, h_h = kept[t]
                z, r = zr[:, :units], zr[:, units:]
                d_a_h = dh * (1 - z) * (1 - hh * hh)
                d_zr = cat([dh * (h_prev - hh), d_a_h * h_h]) * zr * (1 - zr)
                d_recs[t] = cat([d_zr, d_a_h * r])
                d_projs[t] = cat([d_zr, d_a_h])
                dh = dh * z + mm(d_recs[t], recurrent_t)
            flat = o["reshape"]
            h_prevs = flat(o["stack"]([k[0] for k in kept]), (-1, units))
            d_rec = flat(o["stack"](d_recs), (-1, 3 * units))
            d_proj = flat(o["stack"](d_projs), (-1, 3 * units))
            return (
                mm(o["transpose"](flat(x, (-1, features))), d_proj),
                mm(o["transpose"](h_prevs), d_rec),
                o["sum0"](d_proj),
                o["sum0"](d_rec),
                d_head,
            )

    def autograd_grads():
        """The same gradients by autograd of the loop (slower; the check)."""
        loss = ((mm(run_forward(False)[0], head) - y) ** 2).mean()
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


def model_alone(torch, model, x, y, mode):
    """`model` called directly on tensors: under `no_grad` (predict), or
    its forward and backward pass without an optimizer step (train)."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    params = [v.value for v in model.trainable_variables]

    def predict():
        with torch.no_grad():
            model(x)

    def train():
        for p in params:
            p.grad = None
        ((model(x, training=True) - y) ** 2).mean().backward()

    return predict if mode == "predict" else train


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
    shape = benchmark._shape(config)
    floors = {
        "floor": floor_calls(torch, shape),
        "keras_ops_floor": floor_calls(torch, shape, keras_ops=True),
    }
    rows = {}
    for i, mode in enumerate(("predict", "train")):
        print(f"[{i + 1}/2] {mode} ...", flush=True)
        (ours_call,) = benchmark.batch_calls([ours], x, y, mode)
        anchor = benchmark._torch_anchor(config, mode)
        times = benchmark.time_interleaved(
            [
                ours_call,
                model_alone(torch, ours, x, y, mode),
                floors["floor"][mode],
                floors["keras_ops_floor"][mode],
                anchor,
            ],
            repeats=args.repeats,
        )
        t_ours, t_alone, t_floor, t_keras_floor, t_torch = (1e3 * t for t in times)
        rows[mode] = {
            "ours_ms": t_ours,
            "ours_model_alone_ms": t_alone,
            "ours_model_alone_over_keras_ops_floor": t_alone / t_keras_floor,
            "floor_ms": t_floor,
            "keras_ops_floor_ms": t_keras_floor,
            "torch_nn_gru_ms": t_torch,
            "ours_over_keras_ops_floor": t_ours / t_keras_floor,
            "keras_ops_floor_over_floor": t_keras_floor / t_floor,
            "floor_over_torch": t_floor / t_torch,
            "ours_over_torch": t_ours / t_torch,
        }
    results_file.print_table(
        "mode",
        rows,
        [
            ("ours ms", "ours_ms", 1),
            ("ours' model alone ms", "ours_model_alone_ms", 1),
            ("keras.ops floor ms", "keras_ops_floor_ms", 1),
            ("floor ms", "floor_ms", 1),
            ("torch.nn.GRU ms", "torch_nn_gru_ms", 1),
            ("ours/keras.ops floor", "ours_over_keras_ops_floor", 2),
            ("model alone/keras.ops floor", "ours_model_alone_over_keras_ops_floor", 2),
            ("keras.ops floor/floor", "keras_ops_floor_over_floor", 2),
            ("floor/torch.nn.GRU", "floor_over_torch", 2),
            ("ours/torch.nn.GRU", "ours_over_torch", 2),
        ],
    )
    results_file.write(args, benchmark.machine_info(), rows)


if __name__ == "__main__":
    main()
