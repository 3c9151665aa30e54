"""Seconds per forward + backward of Multi-KG4Rec's fusion transformer alone, executed several ways.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fusion.py                      # CPU, ml-1m-kg's shapes
    python benchmarks/bench_fusion.py --device=cuda --variants=eager,bf16,compile,cudagraphs

The transformer over every item's BFS sequence (both modalities, cross attention, 3 blocks, the last one at
position 0 only) is most of a faithful Multi-KG4Rec training batch (benchmarks/results/*/ml1m_profile_*).
This times it on random inputs of the model's shapes (default: ml-1m-kg's 2,924 items, sequences of 16,
d = 64, 8 heads, FFN 128, about 20 % padding), in interleaved rounds so that the ratios hold on a noisy
machine. Variants (every one computes the same function; ``bf16`` in lower precision):

* ``eager``: the model as it runs (PyTorch's scaled-dot-product attention kernels).
* ``bf16``: the same under ``torch.autocast`` with bfloat16.
* ``compile``: ``torch.compile`` (Inductor; the first call compiles, its seconds are reported apart).
* ``cudagraphs`` (CUDA only): ``torch.compile(mode="reduce-overhead")``, which replays CUDA graphs: the
  answer to a launch-bound batch (the H100's profile: 48 ms of CPU time for 20 ms of GPU time per batch).

Each variant's largest output difference from ``eager`` is reported beside its time. Results go to
``benchmarks/results/fusion_<device>.{json,md}`` (``--out_dir``). A benchmark, not a test.
"""
import argparse
import contextlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from recbole_mkg.atomic_io import atomic_write_report  # noqa: E402

VARIANTS = ("eager", "bf16", "compile", "cudagraphs")


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def build(args):
    """The transformer and one batch of inputs of the requested shapes (seeded)."""
    import torch

    from recbole_mkg.model.layers import CrossModalTransformer

    torch.manual_seed(args.seed)
    modalities = [m for m in args.modalities.split(",") if m]
    transformer = CrossModalTransformer(modalities, args.embedding_size, args.layers, args.heads, args.inner_size,
                                        args.dropout, 0.0, args.cross_attention).to(args.device)
    shape = (args.items, args.seq_len, args.embedding_size)
    inputs = {m: torch.randn(*shape, device=args.device, requires_grad=True) for m in modalities}
    padding = torch.rand(args.items, args.seq_len, device=args.device) < args.padding
    padding[:, 0] = False  # position 0, the item itself, is never padding
    return transformer, inputs, padding


def variant_step(name, transformer, inputs, padding, device):
    """name -> a function running one forward + backward and returning the detached outputs."""
    import torch

    context = contextlib.nullcontext
    module = transformer
    if name == "bf16":
        context = lambda: torch.autocast(device, dtype=torch.bfloat16)  # noqa: E731
    elif name == "compile":
        module = torch.compile(transformer)
    elif name == "cudagraphs":
        module = torch.compile(transformer, mode="reduce-overhead")
    elif name != "eager":
        raise ValueError(f"--variants: unknown {name!r}; use any of {', '.join(VARIANTS)}")

    def step():
        transformer.zero_grad(set_to_none=True)
        with context():
            out = module(inputs, padding, first_only=True)
            loss = sum(o.float().pow(2).mean() for o in out.values())
        loss.backward()
        return {m: o.detach().float().clone() for m, o in out.items()}

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", default=None, help="comma-separated; default eager,bf16,compile "
                                                        "(and cudagraphs on CUDA)")
    parser.add_argument("--items", type=int, default=2924, help="sequences (ml-1m-kg: 2,924 items)")
    parser.add_argument("--seq_len", type=int, default=16)
    parser.add_argument("--embedding_size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--inner_size", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="hidden dropout (default 0: with dropout no two variants draw the same masks)")
    parser.add_argument("--modalities", default="visual,text")
    parser.add_argument("--cross_attention", default="bidirectional")
    parser.add_argument("--padding", type=float, default=0.2, help="fraction of padded positions")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    import torch

    from recbole_mkg.utils import device_name

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device=cuda: no CUDA device here; use --device=cpu")
    names = (args.variants.split(",") if args.variants else
             ["eager", "bf16", "compile"] + (["cudagraphs"] if args.device == "cuda" else []))
    if "cudagraphs" in names and args.device != "cuda":
        raise SystemExit("--variants: cudagraphs needs --device=cuda")
    transformer, inputs, padding = build(args)
    steps = {name: variant_step(name, transformer, inputs, padding, args.device) for name in names}

    reference, first_call, max_diff = None, {}, {}
    for name in names:  # first calls apart: compilation, allocator warm-up
        start = time.perf_counter()
        out = steps[name]()
        _sync(args.device)
        first_call[name] = time.perf_counter() - start
        if name == "eager":
            reference = out
        if reference is not None:
            max_diff[name] = max(float((out[m] - reference[m]).abs().max()) for m in out)
        print(f"[fusion] {name}: first call {first_call[name]:.2f} s", flush=True)

    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            steps[name]()  # one untimed step after switching variants
            _sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            _sync(args.device)
            times[name].append((time.perf_counter() - start) / args.steps)
            print(f"[fusion] round {r + 1}: {name} {times[name][-1]:.4f} s / step", flush=True)

    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    base = median.get("eager")
    record = {"device": device_name(args.device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "shapes": {k: v for k, v in vars(args).items()
                                                             if k not in ("out_dir", "variants", "device")},
              "seconds_per_step": times, "median": median, "first_call_s": first_call,
              "max_abs_diff_vs_eager": max_diff, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    stem = os.path.join(args.out_dir, f"fusion_{args.device}")
    lines = [f"# Fusion transformer, forward + backward ({record['when']}, {record['device']}, torch "
             f"{torch.__version__}, {record['threads']} thread(s))", "",
             f"{args.items} sequences x {args.seq_len}, d {args.embedding_size}, {args.layers} blocks, "
             f"{args.heads} heads, FFN {args.inner_size}, modalities {args.modalities}, {args.cross_attention} "
             f"cross attention, dropout {args.dropout}; median of {args.rounds} interleaved rounds of "
             f"{args.steps} steps." + (" With dropout every call draws its own masks, so the differences "
                                       "from eager include dropout's, not only the variant's."
                                       if args.dropout > 0 else ""), "",
             "| variant | s / step (median) | vs eager | first call s | max abs diff vs eager |",
             "|---|---|---|---|---|"]
    for name in names:
        ratio = f"{median[name] / base:.2f}" if base else "-"
        diff = f"{max_diff[name]:.2e}" if name in max_diff else "-"
        lines.append(f"| {name} | {median[name]:.4f} | {ratio} | {first_call[name]:.2f} | {diff} |")
    atomic_write_report(stem, record, lines)
    print("\n".join(lines))
    print(f"[fusion] wrote {stem}.json, {stem}.md")
    return record


if __name__ == "__main__":
    main()
