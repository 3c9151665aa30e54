"""Seconds per training step of one model on one dataset, and where they go (any plugin or RecBole model).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_step.py --model=CrossGMMI --dataset=ml-100k-kg \\
        --data_path=../shared/datasets --feature_dir=dataset/ml-100k-kg-features [--steps=5] [--key=value ...]

Times ``--steps`` BPR training steps (forward + loss + backward, one fixed batch of ``train_batch_size``;
the median is reported), plus, for models with a KG loss, one KG step, and for CrossGMMI one pre-training
(InfoNCE) step, with the number of such steps per epoch, so that an epoch's cost follows; then a
``torch.profiler`` table of one training step. Any ``--key=value`` is a config override. Results go to
``benchmarks/results/step_<model>_<dataset>_<device>.{json,md}`` (``--out_dir``). A benchmark, not a test:
compare two versions of the code by running it on each (e.g. from a ``git worktree``).
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from benchmarks.cli import config_overrides  # noqa: E402
from recbole_mkg.atomic_io import atomic_write_report  # noqa: E402


def _median_seconds(fn, steps):
    fn()  # warm-up (allocator, cached graphs)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="mkg-demo")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out_dir", default=os.path.join(HERE, "results"))
    args, unknown = parser.parse_known_args(argv)
    overrides = config_overrides(unknown)
    import torch
    from recbole.data.interaction import Interaction
    from recbole.utils import init_seed
    from torch.profiler import profile

    from recbole_mkg.config import Config
    from recbole_mkg.quick_start import build
    from recbole_mkg.utils import device_name

    sys.argv = sys.argv[:1]  # RecBole's Config would read this script's flags too
    config = Config(model=args.model, dataset=args.dataset, config_dict={
        "show_progress": False, "state": "ERROR", "epochs": 1,
        "checkpoint_dir": os.path.join(ROOT, "saved", "profile_step"), **overrides})
    init_seed(config["seed"], config["reproducibility"])
    _, (train, _, _), model, _ = build(config)
    model.train()
    if hasattr(train, "set_mode"):  # RecBole's KG loader: the BPR part first
        from recbole.data.dataloader.knowledge_dataloader import KGDataLoaderState

        train.set_mode(KGDataLoaderState.RS)
    batch = next(iter(train)).to(config["device"])
    report = {"model": args.model, "dataset": args.dataset, "device": str(config["device"]),
              "device_name": device_name(config["device"]), "torch_threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M"), "train_batch_size": config["train_batch_size"],
              "params": int(sum(p.numel() for p in model.parameters())), "steps": {}}

    def step(loss_fn, data):
        def run():
            model.zero_grad(set_to_none=True)
            loss_fn(data).backward()
        return run

    def record(name, fn, per_epoch):
        median, times = _median_seconds(fn, args.steps)
        report["steps"][name] = {"median_s": round(median, 4), "all_s": [round(t, 4) for t in times],
                                 "per_epoch": per_epoch, "epoch_s": round(median * per_epoch, 1)}

    record("bpr", step(model.calculate_loss, batch), len(getattr(train, "general_dataloader", train)))
    if hasattr(model, "calculate_kg_loss") and hasattr(train, "set_mode"):
        train.set_mode(KGDataLoaderState.KG)
        record("kg", step(model.calculate_kg_loss, next(iter(train)).to(config["device"])), len(train.kg_dataloader))
    if hasattr(model, "build_pretrain_task"):  # CrossGMMI's phase 1
        task, pairs, _ = model.build_pretrain_task(config)
        task.to(config["device"]).train()
        size = config["pretrain_batch_size"]
        anchors = Interaction({"pair": torch.arange(min(size, len(pairs)))}).to(config["device"])
        record("pretrain", step(task.loss, anchors), (len(pairs) + size - 1) // size)
    with profile() as prof:
        step(model.calculate_loss, batch)()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)

    base = os.path.join(args.out_dir, f"step_{args.model}_{args.dataset}_{config['device'].type}")
    lines = [f"# {args.model} on {args.dataset}: seconds per training step ({report['date']}, "
             f"{report['device']}: {report['device_name']}, torch threads {report['torch_threads']})", "",
             f"Median of {args.steps} steps (forward + loss + backward) after one warm-up; batch "
             f"{report['train_batch_size']}; #params {report['params']:,}; overrides {overrides or 'none'}.", "",
             "| step | s (median) | steps per epoch | s per epoch |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['median_s']} | {s['per_epoch']} | {s['epoch_s']} |" for name, s in report["steps"].items()]
    lines += ["", "torch.profiler, one BPR training step:", "", "```", table, "```"]
    atomic_write_report(base, report, lines)
    print("\n".join(lines[:8 + len(report["steps"])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
