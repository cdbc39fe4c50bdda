"""Trains the shared model (`distributed_model.py`) with PyTorch, in one
process or as one of several joined by `torch.distributed` (gloo).

    python torch_ddp.py single OUT.npz
    python torch_ddp.py ddp OUT.npz RANK SIZE PORT

Both run the custom training loop of Keras' PyTorch distributed guide: the
Keras model is a `torch.nn.Module`, called with `training=True` (a bare
call runs in inference mode, and the layer's inference loops have no
hand-written backward pass), trained by a `torch.optim.SGD` over its
parameters with `torch.nn.MSELoss`. `single`: one process, the global
batches: the reference. `ddp`: SIZE processes joined through
127.0.0.1:PORT (gloo, CPU), the model inside
`torch.nn.parallel.DistributedDataParallel`, each process on its part of
every global batch; DDP averages the gradients over the processes, which
makes them the global batch's.

Process 0 writes the trained weights to OUT.npz and prints a JSON line.
"""

import os
import sys
import time

import distributed_model as shared

STARTED = time.perf_counter()
shared.limit_lifetime()
os.environ["KERAS_BACKEND"] = "torch"


def main(argv):
    mode, out, rank, size, ports = shared.args(argv)

    import keras
    import numpy as np
    import torch

    import keras_gru_plus
    from keras_gru_plus import policy

    if mode == "ddp":
        torch.distributed.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{ports[0]}",
            rank=rank,
            world_size=size,
        )
    elif mode != "single":
        raise ValueError(f"unknown mode {mode!r}")

    x, y = shared.data()
    if mode == "ddp":
        x, y = shared.local_part(x, rank, size), shared.local_part(y, rank, size)
    batch = shared.GLOBAL_BATCH // size

    model = shared.build(keras, keras_gru_plus.GRU)
    initial = model.get_weights()
    trained = model
    if mode == "ddp":
        trained = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=shared.LEARNING_RATE)
    loss_fn = torch.nn.MSELoss()
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    with policy.recording() as plans:
        for _ in range(shared.EPOCHS):
            for start in range(0, len(inputs), batch):
                outputs = trained(inputs[start : start + batch], training=True)
                loss = loss_fn(outputs, targets[start : start + batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    facts = {"mode": mode, "processes": size, "torch": torch.__version__}
    if mode == "ddp":
        # The parameters whose gradients DDP all-reduces.
        facts["ddp_parameters"] = sum(
            1 for p in trained.parameters() if p.requires_grad
        )
        # DDP's reducer is released before its process group, and the
        # processes leave together: without this, one process hung at exit
        # in 2 runs of 11; with it, in none of 38.
        del trained
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank == 0:
        weights = [np.asarray(w) for w in model.get_weights()]
        shared.save(out, weights, initial, plans, STARTED, **facts)


if __name__ == "__main__":
    main(sys.argv)
