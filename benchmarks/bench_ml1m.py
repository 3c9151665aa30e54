"""Multi-KG4Rec vs the KGAT port on ml-1m-kg: time per training batch, profile, full-ranking eval, memory.

    nice -n 10 .venv/bin/python benchmarks/bench_ml1m.py [--data_path=../shared/datasets] [--batches=6]

Both models are built in one process and timed *interleaved* (KGAT block, Multi-KG4Rec block, repeated),
over a fixed number of BPR training batches (forward + backward + Adam step, the hot path of an epoch:
a full KGAT epoch on ml-1m takes minutes on CPU), so that their ratio holds on a noisy shared machine.
Also: one TransR (KG) batch each, the per-epoch attention update, the full-ranking evaluation of the
test users, a torch.profiler table of where a training batch spends its time, and each model's peak RSS
measured in its own child process (``--memory_of=<model>``).

The feature files: real ones when ``--feature_dir`` holds them, otherwise synthetic random vectors of the
real dimensions (text 384-d for every entity, visual 116-d for 43% of items), labelled so in the output;
speed does not depend on the values. Results go to ``benchmarks/results/ml1m_<device>.{json,md}`` and
``ml1m_profile_<model>.txt``.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from benchmarks.cli import config_overrides  # noqa: E402
from recbole_mkg.atomic_io import atomic_open, atomic_write_report  # noqa: E402

def _config_file(name):
    import yaml

    with open(os.path.join(HERE, "configs", name), encoding="utf-8") as f:
        return yaml.safe_load(f)


#: timed variant -> (model, config overrides). "MultiKG4Rec-fast" is the named speed option
#: (fusion_sample_ratio 0.1, beyond the paper); its accuracy cost is measured in docs/results.md. The
#: "@" variants are those of the comparisons (benchmarks/configs/, beyond the papers).
VARIANTS = {
    "KGAT": ("KGAT", {}),
    "MultiKG4Rec": ("MultiKG4Rec", {}),
    "MultiKG4Rec-fast": ("MultiKG4Rec", {"fusion_sample_ratio": 0.1}),
    # torch.compile over the transformer; on CUDA its CUDA graphs (on CPU the mode is Inductor's default)
    "MultiKG4Rec@compiled": ("MultiKG4Rec", {"fusion_compile": "reduce-overhead"}),
    "KGAT@ui-light": ("KGAT", _config_file("ui_light.yaml")),
    "MultiKG4Rec@text-ui-light": ("MultiKG4Rec", {**_config_file("mkg_text.yaml"), **_config_file("ui_light.yaml")}),
}
#: the default set; the first of a --models list is the reference of the ratios
MODELS = ("KGAT", "MultiKG4Rec", "MultiKG4Rec-fast")


def synthetic_features(data_path, out_dir, seed=0):
    """Random feature files with ml-1m-kg's real dimensions and coverage (speed only, never accuracy)."""
    import numpy as np
    import pandas as pd

    from recbole_mkg.data.features import write_feature_file

    done = os.path.join(out_dir, "ml-1m-kg.text.feat")
    if os.path.isfile(done):
        return out_dir
    folder = os.path.join(data_path, "ml-1m-kg")
    kg = pd.read_csv(os.path.join(folder, "ml-1m-kg.kg"), sep="\t", dtype=str, quoting=3, keep_default_na=False)
    link = pd.read_csv(os.path.join(folder, "ml-1m-kg.link"), sep="\t", dtype=str, quoting=3, keep_default_na=False)
    entities = sorted(set(kg.iloc[:, 0]) | set(kg.iloc[:, 2]) | set(link.iloc[:, 1]))
    rng = np.random.default_rng(seed)
    meta = {"synthetic": True, "why": "benchmarks/bench_ml1m.py: speed only"}
    write_feature_file(os.path.join(out_dir, "ml-1m-kg.text.feat"), entities,
                       rng.standard_normal((len(entities), 384)).astype("float32"), meta=meta)
    items = link.iloc[:, 1].tolist()
    with_image = [e for e in items if rng.random() < 0.434]
    write_feature_file(os.path.join(out_dir, "ml-1m-kg.visual.feat"), with_image,
                       rng.standard_normal((len(with_image), 116)).astype("float32"), meta=meta)
    return out_dir


def config_dict(args, feature_dir):
    cfg = {"data_path": args.data_path, "use_gpu": args.device == "cuda", "show_progress": False, "state": "ERROR",
           "train_batch_size": args.batch_size, "epochs": 1, "seed": 2020,  # eval_batch_size: the plugin default
           "checkpoint_dir": os.path.join(ROOT, "saved", "bench"), "feature_dir": feature_dir,
           "feature_files": {"text": "text.feat", "visual": "visual.feat"},
           "feature_cache_dir": os.path.join(ROOT, "saved", "feature_cache")}
    cfg.update(args.overrides)
    return cfg


def build_model(name, args, feature_dir):
    from recbole.utils import init_seed

    from recbole_mkg.config import Config
    from recbole_mkg.quick_start import build

    model, overrides = VARIANTS[name]
    config = Config(model=model, dataset="ml-1m-kg", config_dict={**config_dict(args, feature_dir), **overrides})
    init_seed(config["seed"], config["reproducibility"])
    start = time.perf_counter()
    dataset, (train, valid, test), model, trainer = build(config)
    built = time.perf_counter() - start
    return {"config": config, "dataset": dataset, "train": train, "test": test, "model": model,
            "trainer": trainer, "build_s": built}


def _batches(entry, state, n):
    """The first ``n`` batches of the train loader in ``state`` (RS or KG), on the device."""
    from recbole.data.dataloader.knowledge_dataloader import KGDataLoaderState

    loader = entry["train"]
    loader.set_mode(KGDataLoaderState.RS if state == "RS" else KGDataLoaderState.KG)
    out = []
    for batch in loader:
        out.append(batch.to(entry["config"]["device"]))
        if len(out) == n:
            break
    return out


def _step(entry, batch, kg=False):
    model, optimizer = entry["model"], entry["trainer"].optimizer
    optimizer.zero_grad()
    loss = model.calculate_kg_loss(batch) if kg else model.calculate_loss(batch)
    loss.backward()
    optimizer.step()


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_training(entries, args):
    """Interleaved timing of ``args.batches`` BPR batches per round, ``args.rounds`` rounds."""
    for entry in entries.values():
        entry["model"].train()
        entry["rs"] = _batches(entry, "RS", args.batches)
        entry["kg"] = _batches(entry, "KG", 2)
        _step(entry, entry["rs"][0])  # warm-up (allocator, adjacency build)
        entry["times"], entry["kg_times"] = [], []
    for _ in range(args.rounds):
        for name, entry in entries.items():
            _sync(args.device)
            start = time.perf_counter()
            for batch in entry["rs"]:
                _step(entry, batch)
            _sync(args.device)
            entry["times"].append((time.perf_counter() - start) / len(entry["rs"]))
            start = time.perf_counter()
            _step(entry, entry["kg"][-1], kg=True)
            _sync(args.device)
            entry["kg_times"].append(time.perf_counter() - start)


def time_attention_and_eval(entries, args):
    import torch

    for name, entry in entries.items():
        model, trainer = entry["model"], entry["trainer"]
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            model.update_attentive_A()
        _sync(args.device)
        entry["attention_s"] = time.perf_counter() - start
        evals = []
        for _ in range(args.eval_repeats):
            model.restore_user_e = model.restore_entity_e = None
            start = time.perf_counter()
            result = trainer.evaluate(entry["test"], load_best_model=False, show_progress=False)
            _sync(args.device)
            evals.append(time.perf_counter() - start)
        entry["eval_s"] = min(evals)
        entry["eval_users"] = int(entry["test"]._dataset.user_num - 1)
        entry["eval_result"] = dict(result)


def profile(entry, name, args, out_dir):
    if args.skip_profile:
        return ""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    entry["model"].train()
    with torch_profile(activities=activities, record_shapes=False) as prof:
        for batch in entry["rs"][:2]:
            _step(entry, batch)
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=18)
    path = os.path.join(out_dir, f"ml1m_profile_{name}_{args.device}.txt")
    with atomic_open(path) as f:
        f.write(f"torch.profiler, 2 BPR training batches of {name} (batch {args.batch_size}) on {args.device}\n\n")
        f.write(table)
    return path


def memory_child(name, args, feature_dir):
    """Child process: build one model, train ``batches`` batches, evaluate; print peak RSS (and GPU)."""
    import torch

    entry = build_model(name, args, feature_dir)
    entry["model"].train()
    for batch in _batches(entry, "RS", args.batches):
        _step(entry, batch)
    entry["trainer"].evaluate(entry["test"], load_best_model=False, show_progress=False)
    from recbole_mkg.utils import peak_rss_mb  # VmHWM: not inherited from the parent

    out = {"peak_rss_mb": peak_rss_mb()}
    if args.device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("MEMORY " + json.dumps(out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default=os.path.join(os.path.dirname(ROOT), "shared", "datasets"))
    parser.add_argument("--feature_dir", default=None, help="real feature files (default: synthetic)")
    parser.add_argument("--batches", type=int, default=6, help="BPR batches per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument("--eval_repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--memory_of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_profile", action="store_true")
    parser.add_argument("--out_dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, the first is the reference of the ratios; of {list(VARIANTS)}")
    args, unknown = parser.parse_known_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown_models = [m for m in models if m not in VARIANTS]
    if unknown_models or not models:
        parser.error(f"--models: {unknown_models or args.models!r} not among {list(VARIANTS)}")
    args.overrides = config_overrides(unknown, typed=False)  # passed on to each model's process as given
    if not os.path.isdir(os.path.join(args.data_path, "ml-1m-kg")):
        print(f"ml-1m-kg not found under {args.data_path}: nothing to benchmark")
        return 0
    import torch

    from recbole_mkg.utils import device_name as describe_device

    synthetic = args.feature_dir is None
    feature_dir = args.feature_dir or synthetic_features(args.data_path, os.path.join(ROOT, "saved", "bench_features"))
    if args.memory_of:
        memory_child(args.memory_of, args, feature_dir)
        return 0

    os.makedirs(args.out_dir, exist_ok=True)
    entries = {name: build_model(name, args, feature_dir) for name in models}
    time_training(entries, args)
    time_attention_and_eval(entries, args)
    profiles = {name: profile(entry, name, args, args.out_dir) for name, entry in entries.items()}

    memory = {}
    if not args.skip_memory:
        for name in models:
            cmd = [sys.executable, os.path.abspath(__file__), f"--memory_of={name}", f"--data_path={args.data_path}",
                   f"--batches={args.batches}", f"--batch_size={args.batch_size}", f"--device={args.device}"]
            cmd += [f"--feature_dir={args.feature_dir}"] if args.feature_dir else []
            cmd += [f"--{k}={v}" for k, v in args.overrides.items()]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("MEMORY ")]
            memory[name] = json.loads(line[-1][7:]) if line else {"error": proc.stderr[-500:]}

    device_name = describe_device(args.device)
    threads = torch.get_num_threads()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": args.device, "device_name": device_name,
              "cpu_count": os.cpu_count(), "torch_threads": threads, "batch_size": args.batch_size,
              "timed_batches": args.batches * args.rounds, "synthetic_features": synthetic, "models": {}}
    for name, entry in entries.items():
        ds = entry["dataset"]
        times = sorted(entry["times"])
        report["models"][name] = {
            "params": int(sum(p.numel() for p in entry["model"].parameters())),
            "ckg_edges": int(entry["model"].ckg.num_edges),
            "build_s (dataset+split+model, BFS included)": round(entry["build_s"], 2),
            "train_s_per_bpr_batch (median round)": round(times[len(times) // 2], 4),
            "train_s_per_bpr_batch (all rounds)": [round(t, 4) for t in entry["times"]],
            "train_s_per_kg_batch (median)": round(sorted(entry["kg_times"])[len(entry["kg_times"]) // 2], 4),
            "attention_update_s": round(entry["attention_s"], 3),
            "full_ranking_eval_s": round(entry["eval_s"], 3),
            "eval_users": entry["eval_users"],
            "users": int(ds.user_num - 1), "items": int(ds.item_num - 1), "entities": int(ds.entity_num - 1),
            # BPR batches of one epoch (the KG loader's len() follows its current RS/KG mode: ask each part)
            "train_batches_per_epoch": len(entry["train"].general_dataloader),
            "kg_batches_per_epoch": len(entry["train"].kg_dataloader),
            "memory": memory.get(name),
            "profile": os.path.relpath(profiles[name], ROOT) if profiles[name] else "-",
        }
    ref = models[0]
    k = report["models"][ref]
    key = "train_s_per_bpr_batch (median round)"
    for name in models[1:]:
        m = report["models"][name]
        m[f"ratio_train_batch_vs_{ref}"] = round(m[key] / k[key], 2)
        m[f"ratio_full_ranking_eval_vs_{ref}"] = round(m["full_ranking_eval_s"] / k["full_ranking_eval_s"], 2)
    if ref == "KGAT" and "MultiKG4Rec" in models:
        report["ratio_train_batch"] = report["models"]["MultiKG4Rec"]["ratio_train_batch_vs_KGAT"]
        report["ratio_full_ranking_eval"] = report["models"]["MultiKG4Rec"]["ratio_full_ranking_eval_vs_KGAT"]
    base = os.path.join(args.out_dir, f"ml1m_{args.device}")
    lines = [f"# {', '.join(models[1:])} vs {ref} on ml-1m-kg ({report['date']}, {args.device}: {device_name}, "
             f"{report['cpu_count']} cores, torch threads {threads})", "",
             f"Batch size {args.batch_size}; {args.batches} BPR batches x {args.rounds} interleaved rounds per model;"
             f" features {'SYNTHETIC (random, real dimensions; speed only)' if synthetic else 'real'}.", "",
             "| | " + " | ".join(models) + " | " + " | ".join(f"{n} / {ref}" for n in models[1:]) + " |",
             "|---" * (2 * len(models)) + "|"]
    names, models = models, [report["models"][n] for n in models]

    def row(label, values):
        ratios = [f"{v / values[0]:.2f}" if values[0] and v is not None else "-" for v in values[1:]]
        shown = ["-" if v is None else (f"{v:.0f}" if isinstance(v, float) and v > 100 else str(v)) for v in values]
        lines.append(f"| {label} | " + " | ".join(shown) + " | " + " | ".join(ratios) + " |")

    rows = [("train s / BPR batch (median)", key), ("train s / TransR batch", "train_s_per_kg_batch (median)"),
            ("attention update s (per epoch)", "attention_update_s"), ("full-ranking eval s (all test users)",
                                                                        "full_ranking_eval_s"),
            ("build s (data+split+model)", "build_s (dataset+split+model, BFS included)"), ("#params", "params")]
    for label, field in rows:
        row(label, [m[field] for m in models])
    for field in ("peak_rss_mb", "peak_gpu_mb"):
        values = [(m.get("memory") or {}).get(field) for m in models]
        if all(v is not None for v in values):
            row(f"peak {field[5:-3].upper()} MB (own process)", values)
    lines += ["", f"BPR batches per epoch: {k['train_batches_per_epoch']}, TransR batches {k['kg_batches_per_epoch']}; CKG edges {k['ckg_edges']:,}; "
                  f"users {k['users']:,}, items {k['items']:,}, entities {k['entities']:,}.",
              "Variants (beyond the papers): " + "; ".join(f"{n} = {VARIANTS[n][0]} + {VARIANTS[n][1]}" for n in names
                                                           if VARIANTS[n][1]) + ".",
              "Profiles: " + ", ".join(m["profile"] for m in models) + "."]
    atomic_write_report(base, report, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
