"""Train and test recbole-mkg or RecBole models: one model, several side by side, or a Ray Tune sweep.

    python run_recbole_mkg.py --model=MultiKG4Rec                      # embedded mkg-demo dataset
    python run_recbole_mkg.py --model=KGAT --dataset=ml-100k-kg --data_path=../shared/datasets
    python run_recbole_mkg.py --model=BPR --config_files="a.yaml b.yaml" --learning_rate=0.005

Side by side (each (model, seed) in its own process, one saved split, resumable; see recbole_mkg/compare.py):

    python run_recbole_mkg.py --model=BPR,LightGCN,KGAT,MultiKG4Rec --dataset=ml-100k-kg \\
        --data_path=../shared/datasets --seeds=2020,2021,2022 --protocol=paper \\
        --results_dir=results/ml-100k-kg --epochs_cap=KGAT:20,MultiKG4Rec:20

Ray Tune sweep (RecBole's hyper-parameter file syntax or YAML/JSON; see recbole_mkg/tune.py):

    python run_recbole_mkg.py --model=KGAT --dataset=ml-100k-kg --tune=hyper.test --num_samples=8 \\
        --scheduler=asha --cpus_per_trial=2 --gpus_per_trial=0.5 --tune_dir=results/tune

The fair comparison: the same tuning budget per model (trials x epoch cap, on the validation part of one
saved split), then every model's best config side by side (a folder of <Model>.test search spaces):

    python run_recbole_mkg.py --model=BPR,LightGCN,KGAT,MultiKG4Rec,MultiKG4Rec@text --tune=benchmarks/spaces \
        --num_samples=8 --epochs=20 --seeds=2020,2021,2022 --model_configs=MultiKG4Rec@text=text.yaml

Test metrics per item group (popular / long-tail items, items with or without a modality's features) of a
results folder's runs, from the top-K lists each run saved (see recbole_mkg/breakdown.py):

    python run_recbole_mkg.py --breakdown --results_dir=results/ml-100k-kg \
        --group_features=dataset/ml-100k-kg-features/ml-100k-kg.visual_colour_texture.feat

(--retest_missing: runs without a top-K file get it from their best-epoch checkpoint, written only when the
test metrics come out as recorded; see recbole_mkg/retest.py.)

The saved split alone (nothing trained; e.g. before the folder travels to a GPU machine without the data):

    python run_recbole_mkg.py --split_only --dataset=ml-1m-kg --data_path=../shared/datasets --protocol=paper \\
        --results_dir=results/ml-1m-kg-e10-gpu

Multi-process (DDP) training as RecBole defines it: --nproc=2 [--world_size --ip --port --group_offset]
(NCCL on CUDA, gloo on CPU; --ddp_backend=gloo|nccl to choose).

Flags mirror RecBole's run_recbole.py: --model, --dataset, --config_files (space separated), and any
--key=value config override.
"""
import argparse
import os
import sys


def _int_list(text):
    return [int(s) for s in str(text).split(",") if s.strip()]


def parse_args(argv=None):
    # allow_abbrev=False: --seed=... is a config override, not an abbreviation of --seeds
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", "-m", type=str, default=None,
                        help="model name (plugin or RecBole); a comma-separated list runs them side by side; "
                             "Model@label is a named variant (give it a file with --model_configs)")
    parser.add_argument("--dataset", "-d", type=str, default="mkg-demo", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="config files, space separated")
    # side by side
    side = parser.add_argument_group("side by side (several models and/or seeds)")
    side.add_argument("--seeds", type=str, default=None, help="comma-separated seeds, e.g. 2020,2021,2022")
    side.add_argument("--results_dir", type=str, default=None, help="results folder (default results/<dataset>)")
    side.add_argument("--protocol", type=str, default=None, help="ready protocol config, e.g. 'paper'")
    side.add_argument("--epochs_cap", type=str, default=None, help="per-model epoch caps: KGAT:20,BPR:100 or 20")
    side.add_argument("--model_configs", type=str, default=None,
                      help="extra config file per model: KGAT=kgat_best.yaml,BPR=bpr_best.yaml")
    side.add_argument("--split_seed", type=int, default=None, help="seed of the one saved split (default: the saved split's, else the first seed)")
    side.add_argument("--run_timeout", type=float, default=None, help="seconds per (model, seed) run")
    side.add_argument("--jobs", type=int, default=1, help="(model, seed) runs at once (timings then share the machine)")
    side.add_argument("--split_only", action="store_true",
                      help="no training: make (or check) --results_dir's saved split with the given protocol and "
                           "overrides (e.g. before copying the folder to a machine without the dataset)")
    side.add_argument("--summarise", action="store_true",
                      help="no training: rewrite --results_dir's tables, chart and curves from the runs it holds "
                           "(every model there, or those of --model, in that order; every seed, or those of --seeds)")
    side.add_argument("--breakdown", action="store_true",
                      help="no training: test Recall/NDCG@K of --results_dir's runs per item group (popularity "
                           "head/mid/tail, feature coverage, --item_groups) into breakdown.md/.csv/.png")
    side.add_argument("--retest_missing", action="store_true",
                      help="with --breakdown: runs without a top-K file get it from their best-epoch checkpoint "
                           "(the test evaluated again; written only when the recorded metrics come out again)")
    side.add_argument("--group_features", type=str, default=None,
                      help="with --breakdown: comma-separated feature files; groups 'has <file>' / 'no <file>'")
    side.add_argument("--item_groups", type=str, default=None,
                      help="with --breakdown: a file with item_id:token and group:token columns")
    # Ray Tune
    tune = parser.add_argument_group("Ray Tune sweep")
    tune.add_argument("--tune", type=str, default=None, help="search-space file (RecBole params syntax, YAML or JSON); with several models "
                      "or --seeds: the equal-budget comparison, a folder of <Model>.test files (or one file for all)")
    tune.add_argument("--num_samples", type=int, default=None, help="trials to sample (per grid point; default 10)")
    tune.add_argument("--scheduler", type=str, default=None, help="asha (default) | fifo; a resumed sweep keeps its own")
    tune.add_argument("--sampler", type=str, default=None,
                      help="random (Ray's draws; a single sweep's default) | stratified (one trial per stratum of "
                           "each continuous parameter, choices balanced; the equal-budget comparison's default)")
    tune.add_argument("--tune_seed", type=int, default=None, help="seed of the trials' draws (default 2020)")
    tune.add_argument("--grace_period", type=int, default=None,
                      help="ASHA: epochs every trial runs before it may be stopped (default 1)")
    tune.add_argument("--reduction_factor", type=float, default=None,
                      help="ASHA: 1/this of the trials at a rung go on (default 2)")
    tune.add_argument("--cpus_per_trial", type=float, default=1)
    tune.add_argument("--gpus_per_trial", type=float, default=0, help="fractional GPUs allowed, e.g. 0.5")
    tune.add_argument("--max_concurrent", type=int, default=None, help="trials running at once")
    tune.add_argument("--trial_retries", type=int, default=0,
                      help="restarts of a failed trial (a lost worker or node) from its last validated epoch")
    tune.add_argument("--ray_address", type=str, default=None, help="join this Ray cluster (e.g. auto, ray://host:10001)")
    tune.add_argument("--tune_dir", type=str, default=None, help="sweep folder (default results/tune)")
    tune.add_argument("--tune_name", type=str, default=None, help="sweep name (default <model>-<dataset>)")
    tune.add_argument("--no_resume", action="store_true", help="start the sweep afresh instead of resuming")
    # DDP
    ddp = parser.add_argument_group("multi-process training (RecBole's DDP)")
    ddp.add_argument("--nproc", type=int, default=1, help="processes on this node")
    ddp.add_argument("--world_size", type=int, default=-1, help="processes in all (default nproc)")
    ddp.add_argument("--ip", type=str, default="localhost")
    ddp.add_argument("--port", type=str, default="5678")
    ddp.add_argument("--group_offset", type=int, default=0)
    args, unknown = parser.parse_known_args(argv)
    overrides = {}
    for arg in unknown:
        if not arg.startswith("--") or "=" not in arg:
            parser.error(f"unrecognised argument {arg!r}: config overrides are written --key=value")
        key, value = arg[2:].split("=", 1)
        overrides[key] = value
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    return args, config_files, overrides


def _model_configs(text):
    out = {}
    for part in (text or "").split(","):
        if part.strip():
            name, files = part.split("=", 1)
            out[name.strip()] = files.strip().split(" ")
    return out


def main(argv=None):
    args, config_files, overrides = parse_args(argv)
    given = [f for f, v in (("--retest_missing", args.retest_missing), ("--group_features", args.group_features),
                            ("--item_groups", args.item_groups)) if v]
    if given and not args.breakdown:
        raise SystemExit(f"{', '.join(given)}: only with --breakdown (add it, or leave "
                         f"{'them' if len(given) > 1 else 'it'} out)")
    if args.summarise or args.breakdown:  # no training: a results folder's runs, as they are
        flag = "--summarise" if args.summarise else "--breakdown"
        if not args.results_dir or not os.path.isdir(os.path.join(args.results_dir, "runs")):
            raise SystemExit(f"{flag} needs --results_dir=<a results folder with runs/>, got {args.results_dir!r}")
        chosen = [m.strip() for m in args.model.split(",") if m.strip()] if args.model else None
        seeds = _int_list(args.seeds) if args.seeds else None
        if args.summarise:
            from recbole_mkg.results_report import summarise

            return summarise(args.results_dir, chosen, seeds)
        from recbole_mkg.breakdown import breakdown

        if args.retest_missing:
            from recbole_mkg.retest import recover_topk

            recover_topk(args.results_dir, chosen, seeds)
        features = [f.strip() for f in (args.group_features or "").split(",") if f.strip()]
        return breakdown(args.results_dir, chosen, seeds, feature_files=features, item_group_file=args.item_groups)
    models = [m.strip() for m in (args.model or "MultiKG4Rec").split(",") if m.strip()]
    if args.protocol:
        from recbole_mkg.compare import protocol_file

        config_files = [protocol_file(args.protocol)] + list(config_files or [])
    if args.split_only:
        from recbole_mkg.saved_split import make_split

        return make_split(args.dataset, config_files, overrides, args.results_dir, args.split_seed)

    tune_options = dict(scheduler=args.scheduler, grace_period=args.grace_period,
                        reduction_factor=args.reduction_factor, cpus_per_trial=args.cpus_per_trial,
                        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                        ray_address=args.ray_address, resume=not args.no_resume, sampler=args.sampler,
                        tune_seed=args.tune_seed, trial_retries=args.trial_retries)
    # unset flags leave the callee's default (the sweep's sampler is random, the comparison's stratified),
    # and a resumed sweep its recorded sampler, seed and number of trials
    tune_options = {k: v for k, v in tune_options.items() if v is not None}
    sweep_size = {} if args.num_samples is None else {"num_samples": args.num_samples}
    if args.tune and (len(models) > 1 or args.seeds):
        # the fair comparison: the same tuning budget per model on one split, then the side-by-side runs
        from recbole_mkg.compare import tune_and_compare

        if args.epochs_cap:
            raise SystemExit("--epochs_cap gives models different budgets; with --tune every model gets --epochs")
        seeds = _int_list(args.seeds) if args.seeds else [int(overrides.pop("seed", 2020))]
        return tune_and_compare(models, args.dataset, args.tune, seeds=seeds, config_file_list=config_files,
                                config_dict=overrides, results_dir=args.results_dir, **sweep_size,
                                tune_options=tune_options, model_config_files=_model_configs(args.model_configs),
                                split_seed=args.split_seed, timeout=args.run_timeout, jobs=args.jobs)
    if args.tune:
        from recbole_mkg.tune import run_tune

        return run_tune(models[0], args.dataset, args.tune, config_file_list=config_files, config_dict=overrides,
                        tune_dir=args.tune_dir, name=args.tune_name, **sweep_size, **tune_options)

    if len(models) > 1 or args.seeds:
        from recbole_mkg.compare import compare, parse_epoch_caps

        seeds = _int_list(args.seeds) if args.seeds else [int(overrides.pop("seed", 2020))]
        return compare(models, args.dataset, seeds=seeds, config_file_list=config_files, config_dict=overrides,
                       results_dir=args.results_dir, epoch_caps=parse_epoch_caps(args.epochs_cap, models),
                       model_config_files=_model_configs(args.model_configs), split_seed=args.split_seed,
                       timeout=args.run_timeout, jobs=args.jobs)

    from recbole_mkg.quick_start import run

    result = run(model=models[0], dataset=args.dataset, config_file_list=config_files, config_dict=overrides,
                 nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
                 group_offset=args.group_offset)
    if result is None:
        return None
    print(f"test result ({result['model']} on {result['dataset']}): {dict(result['test_result'])}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
