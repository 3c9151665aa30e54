"""RecBole's multi-process (DDP) training for the plugin's models, on CPU with gloo and 2 processes.

One spawn of 2 ranks checks both the trainer level (gradients all-reduced: ranks that saw different batches
end an epoch with the same parameters) and the full run of each rank that ``quick_start.run(nproc=2)``
spawns (``_run_rank``: train, checkpoint on rank 0, barrier, test on all ranks, result from rank 0).
"""
import socket

import torch

from tests.conftest import tiny_config


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def _rank(rank, root, port, queue):
    import recbole_mkg  # noqa: F401
    from recbole.utils import init_seed

    from recbole_mkg.config import Config
    from recbole_mkg.quick_start import _run_rank, build

    ddp = dict(nproc=2, world_size=2, offset=0, ip="localhost", port=port)
    config = Config("MultiKG4Rec", "mkg-tiny", config_dict=tiny_config(root, local_rank=rank, **ddp))
    init_seed(config["seed"], config["reproducibility"])
    _, (train, _, _), model, trainer = build(config)
    trainer._train_epoch(train, 0)
    checksum = torch.cat([p.detach().flatten() for p in model.parameters()]).double().sum().reshape(1)
    gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(2)]
    torch.distributed.all_gather(gathered, checksum)
    if rank == 0:
        queue.put({"backend": torch.distributed.get_backend(), "checksums": [float(g) for g in gathered],
                   "device": str(config["device"])})
    # what run(model, dataset, nproc=2) spawns on each rank (reuses the process group, destroys it)
    _run_rank(rank, "KGAT", "mkg-tiny", None, tiny_config(root, epochs=1, **ddp), True, queue)


def test_ddp_two_processes_on_cpu_gloo(tiny_root):
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_rank, args=(str(tiny_root), _free_port(), queue), nprocs=2, join=True)
    sync = queue.get()
    assert sync["backend"] == "gloo" and sync["device"] == "cpu"
    a, b = sync["checksums"]  # each rank saw other batches (DistributedSampler); gradients were all-reduced
    assert abs(a - b) <= 1e-6 * max(1.0, abs(a))
    result = queue.get()
    assert queue.empty()  # only rank 0 reports
    assert result["model"] == "KGAT" and 0.0 <= result["test_result"]["ndcg@20"] <= 1.0
    assert result["checkpoint"] and result["checkpoint"].endswith(".pth")


def test_run_spawns_nproc_ranks_with_recbole_settings(monkeypatch):
    import torch.multiprocessing as mp

    from recbole_mkg import quick_start

    seen = {}
    monkeypatch.setattr(mp, "spawn", lambda fn, args, nprocs, join: seen.update(fn=fn, args=args, nprocs=nprocs))
    assert quick_start.run("KGAT", "x", config_dict={"a": 1}, nproc=2, port="1234") is None
    assert seen["fn"] is quick_start._run_rank and seen["nprocs"] == 2
    assert seen["args"][3] == {"a": 1, "world_size": 2, "ip": "localhost", "port": "1234", "nproc": 2, "offset": 0}
