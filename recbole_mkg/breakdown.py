"""Test metrics per item group: where a model gains or loses (popular vs long-tail items, items with or
without a modality's features, any groups a user names).

Each run of the side-by-side runner saves its test users' top-K lists, ``runs/<key>.topk.npz`` (K = the
largest ``topk``; items as tokens), exactly as RecBole's full-ranking evaluation of the tested epoch ranked
them (:class:`TopKRecorder` records them inside ``trainer.evaluate``; no second pass). :func:`breakdown`
scores those lists against the saved split's test interactions restricted to one group G of items:

* Recall@K_G(u) = |top-K(u) ∩ T_G(u)| / |T_G(u)|,
* NDCG@K_G(u) = sum over ranks r < K with top-K(u)[r] ∈ T_G(u) of 1 / log2(r + 2), divided by the same sum
  over the first min(|T_G(u)|, K) ranks,

averaged over the users with T_G(u) non-empty, where T_G(u) is u's test items that are in G. The top-K
list is the whole list (items of other groups take places too), as in the long-tail literature's
"recall on tail items". For G = every item these are RecBole's Recall@K and NDCG@K, so the table's
"all items" row reproduces each run's own test result (checked by the tests).

Groups: ``popularity`` (always): items by training interactions, cut where the running sum passes one
and two thirds of all training interactions: ``head`` (the few popular items holding the first third),
``mid``, ``tail`` (the many items holding the last third; items never seen in training are tail);
``has <file>`` / ``no <file>`` for each feature file given (an item is covered when it or its linked
entity has a row); and any groups of an item-group file (``item_id:token`` and ``group:token`` columns, an
item may be in several groups).
"""
import os

import numpy as np

from recbole_mkg.atomic_io import atomic_open
from recbole_mkg.results_report import _mean_std, _save_figure, load_records

__all__ = ["TopKRecorder", "topk_path", "breakdown", "popularity_groups", "feature_groups", "read_item_groups",
           "group_metrics"]

POPULARITY_GROUPS = ("head", "mid", "tail")
METRICS = ("recall", "ndcg", "share")


def topk_path(results_dir, key):
    return os.path.join(results_dir, "runs", f"{key}.topk.npz")


class TopKRecorder:
    """``with TopKRecorder(trainer, dataset, k) as rec: trainer.evaluate(test_data)``: records every
    evaluated user's top-``k`` items from the scores RecBole's collector receives (history masked, the
    padding item excluded), then ``rec.save(path)``. Full-ranking evaluation only."""

    def __init__(self, trainer, dataset, k):
        self.trainer, self.dataset, self.k = trainer, dataset, int(k)
        self.users, self.items = [], []

    def __enter__(self):
        import torch

        collector = self.trainer.eval_collector
        original = collector.eval_batch_collect
        uid_field = self.dataset.uid_field

        def collect(scores, interaction, positive_u, positive_i):
            # full ranking: one row of scores per user of the batch, in the interaction's order
            self.users.append(interaction[uid_field].detach().cpu())
            self.items.append(torch.topk(scores, min(self.k, scores.shape[-1]), dim=-1)[1].detach().cpu())
            return original(scores, interaction, positive_u, positive_i)

        self._restore = lambda: setattr(collector, "eval_batch_collect", original)
        collector.eval_batch_collect = collect
        return self

    def __exit__(self, *exc):
        self._restore()
        return False

    def save(self, path):
        """Write ``users`` [n] and ``items`` [n, k] as tokens (string arrays) to ``path`` atomically."""
        import torch

        users = torch.cat(self.users).numpy() if self.users else np.zeros(0, dtype=np.int64)
        items = torch.cat(self.items).numpy() if self.items else np.zeros((0, self.k), dtype=np.int64)
        user_tokens = np.asarray(self.dataset.id2token(self.dataset.uid_field, users), dtype=str)
        item_tokens = np.asarray(self.dataset.id2token(self.dataset.iid_field, items.reshape(-1)),
                                 dtype=str).reshape(items.shape)
        with atomic_open(path, "wb", suffix=".npz") as f:
            np.savez_compressed(f, users=user_tokens, items=item_tokens)
        return path


# ---- item groups ------------------------------------------------------------------------------------------

def _read_table(path, columns):
    from recbole_mkg.data.dataset import read_atomic_table

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (a tab-separated file with a typed header: "
                                f"{', '.join(c + ':token' for c in columns)})")
    table = read_atomic_table(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(table.columns)}); "
                         f"the header names typed columns such as item_id:token")
    return table


def popularity_groups(train_items, all_items):
    """item token -> ``head`` / ``mid`` / ``tail``: items sorted by training interactions (most first),
    cut where the running sum passes 1/3 and 2/3 of all training interactions; unseen items are tail."""
    tokens, counts = np.unique(np.asarray(train_items, dtype=str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    tokens, counts = tokens[order], counts[order]
    before = np.cumsum(counts) - counts  # interactions held by the more popular items
    third = counts.sum() / 3.0
    labels = np.where(before < third, "head", np.where(before < 2 * third, "mid", "tail"))
    groups = {name: set(tokens[labels == name].tolist()) for name in POPULARITY_GROUPS}
    groups["tail"] |= {str(t) for t in all_items} - set(tokens.tolist())
    return groups


def feature_groups(feature_file, link_file, items):
    """``{"has <name>": items with a row, "no <name>": the others}`` for a feature file keyed by
    ``entity_id`` (items reach their entity through ``link_file``) or ``item_id``."""
    from recbole_mkg.data.features import load_feature_file

    table = load_feature_file(feature_file)
    rows = {str(i) for i in table.ids}
    if table.id_field == "entity_id":
        link = _read_table(link_file, ["item_id", "entity_id"])
        covered = {str(i) for i, e in zip(link["item_id"], link["entity_id"]) if e in rows}
    else:
        covered = rows
    name = os.path.basename(feature_file)
    items = {str(i) for i in items}
    return {f"has {name}": items & covered, f"no {name}": items - covered}


def read_item_groups(path):
    """Group name -> item tokens, from a file with ``item_id:token`` and ``group:token`` columns."""
    table = _read_table(path, ["item_id", "group"])
    groups = {}
    for item, group in zip(table["item_id"], table["group"]):
        groups.setdefault(str(group), set()).add(str(item))
    return groups


# ---- metrics ----------------------------------------------------------------------------------------------

def group_metrics(top_users, top_items, test_users, test_items, groups, k):
    """Recall@k and NDCG@k per group (module docstring), vectorised over users.

    top_users [n] and top_items [n, >=k]: tokens of the ranked lists; test_users, test_items [m]: the test
    interactions' tokens; groups: name -> set of item tokens (``None``: every item).
    Returns name -> ``{"recall": float, "ndcg": float, "share": float, "users": int, "test interactions": int}``;
    ``share``: the fraction of all users' top-k places held by the group's items (how much of its lists a
    model gives to popular or to long-tail items).
    """
    top_users = np.asarray(top_users, dtype=str)
    top_items = np.asarray(top_items, dtype=str)[:, :k]
    test_users, test_items = np.asarray(test_users, dtype=str), np.asarray(test_items, dtype=str)
    if len(set(top_users.tolist())) != len(top_users):
        raise ValueError("a top-K file lists a user twice")
    user_index = {u: i for i, u in enumerate(top_users.tolist())}
    test_rows = np.array([user_index.get(u, -1) for u in test_users.tolist()], dtype=np.int64)
    if (test_rows < 0).any():
        raise ValueError(f"{int((test_rows < 0).sum())} test interactions belong to users without a top-K list "
                         f"(e.g. user {test_users[test_rows < 0][0]!r}): the top-K file is not of this split")
    vocabulary, codes = np.unique(np.concatenate([top_items.reshape(-1), test_items]), return_inverse=True)
    top_codes = codes[:top_items.size].reshape(top_items.shape)
    test_codes = codes[top_items.size:]
    n_vocab = len(vocabulary)
    test_keys = np.unique(test_rows * n_vocab + test_codes)  # a pair repeated in the test file counts once
    test_rows, test_codes = test_keys // n_vocab, test_keys % n_vocab
    hit = np.isin(np.arange(len(top_users))[:, None] * n_vocab + top_codes, test_keys)  # [n, k]
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    cumulative_discount = np.concatenate([[0.0], np.cumsum(discount)])
    out = {}
    for name, members in groups.items():
        if members is None:
            in_group = np.ones(n_vocab, dtype=bool)
        else:
            in_group = np.isin(vocabulary, np.asarray(sorted(members), dtype=str))
        slots = in_group[top_codes]  # [n, k]: places of the lists held by the group's items
        share = float(slots.mean())
        group_hit = hit & slots
        keep = in_group[test_codes]
        per_user = np.bincount(test_rows[keep], minlength=len(top_users))  # |T_G(u)|
        users = per_user > 0
        if not users.any():
            out[name] = {"recall": None, "ndcg": None, "share": share, "users": 0, "test interactions": 0}
            continue
        recall = group_hit.sum(1)[users] / per_user[users]
        dcg = (group_hit * discount).sum(1)[users]
        idcg = cumulative_discount[np.minimum(per_user[users], k)]
        out[name] = {"recall": float(recall.mean()), "ndcg": float((dcg / idcg).mean()), "share": share,
                     "users": int(users.sum()), "test interactions": int(keep.sum())}
    return out


# ---- the report -------------------------------------------------------------------------------------------

def _split_files(results_dir, record):
    """(train, test) atomic files of the results folder's saved split (the one every run of it used)."""
    from recbole_mkg.saved_split import SPLIT_PARTS, split_folder

    dataset = record["dataset"]
    folder = split_folder(results_dir, dataset)
    train, test = (os.path.join(folder, f"{dataset}.{part}.inter") for part in (SPLIT_PARTS[0], SPLIT_PARTS[-1]))
    if not (os.path.isfile(train) and os.path.isfile(test)):
        raise FileNotFoundError(f"{folder}: the saved split's {os.path.basename(train)} / {os.path.basename(test)} "
                                f"are missing; make them again with `run_recbole_mkg.py --split_only "
                                f"--results_dir={results_dir}` and the folder's dataset options")
    return train, test


def breakdown(results_dir, models=None, seeds=None, feature_files=(), item_group_file=None, k=None, log=print):
    """Write ``breakdown.md``, ``breakdown.csv`` and ``breakdown.png`` into ``results_dir``: each model's
    test Recall@k / NDCG@k per item group (mean +- std over seeds), from the runs' top-K files.

    ``k``: default the largest K every top-K file holds (20 with the paper protocol). Runs without a top-K
    file (finished before the runner saved them) are listed and left out. Returns the rows.
    """
    from recbole_mkg.atomic_io import atomic_write_text

    records, _, models = load_records(results_dir, models, seeds)
    keyed, without = [], []
    for record in records:
        path = topk_path(results_dir, f"{record['model']}__seed{record['seed']}")
        if not os.path.isfile(path):
            without.append(f"{record['model']} (seed {record['seed']})")
            continue
        with np.load(path) as top:
            keyed.append((record, {"users": top["users"], "items": top["items"]}))
    if not keyed:
        raise FileNotFoundError(f"{results_dir}: no run has a top-K file (runs/<key>.topk.npz); runs made before "
                                f"the runner saved them get theirs from their checkpoints with --retest_missing, or must be run "
                                f"again (delete their runs/<key>.json)")
    k = int(k or min(top["items"].shape[1] for _, top in keyed))
    train_file, test_file = _split_files(results_dir, keyed[0][0])
    train = _read_table(train_file, ["user_id", "item_id"])
    test = _read_table(test_file, ["user_id", "item_id"])
    all_items = set(train["item_id"]) | set(test["item_id"])
    groups = {"all items": None}
    groups.update(popularity_groups(train["item_id"], all_items))
    link_file = os.path.join(os.path.dirname(train_file), f"{keyed[0][0]['dataset']}.link")
    for path in feature_files or ():
        groups.update(feature_groups(path, link_file, all_items))
    if item_group_file:
        groups.update(read_item_groups(item_group_file))

    per_model = {}
    for record, top in keyed:
        result = group_metrics(top["users"], top["items"], test["user_id"], test["item_id"], groups, k)
        per_model.setdefault(record["model"], []).append(result)
    shown = [m for m in models if m in per_model]
    any_result = per_model[shown[0]][0]  # the group sizes are the split's, the same for every run
    rows = []
    for name in groups:
        row = {"group": name, "users": any_result[name]["users"],
               "test interactions": any_result[name]["test interactions"],
               "items": len(all_items) if groups[name] is None else len(groups[name] & all_items)}
        for model in shown:
            for metric in METRICS:
                row[f"{model} {metric}"], row[f"{model} {metric} std"] = _mean_std(
                    [r[name][metric] for r in per_model[model]])
        rows.append(row)

    import csv

    columns = ["group", "items", "test interactions", "users"] + [
        f"{m} {metric}{s}" for m in shown for metric in METRICS for s in ("", " std")]
    with atomic_open(os.path.join(results_dir, "breakdown.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})

    seeds_of = {m: sorted(r["seed"] for r, _ in keyed if r["model"] == m) for m in shown}

    def cell(row, model, metric):  # no std for a single seed
        mean, std = row.get(f"{model} {metric}"), row.get(f"{model} {metric} std")
        if mean is None:
            return "-"
        return f"{mean:.4f}" if len(seeds_of[model]) == 1 else f"{mean:.4f} ± {std:.4f}"

    lines = [f"Test Recall@{k} / NDCG@{k} per item group (mean ± std over seeds; a user counts in a group when "
             f"one of their test items is in it; the whole top-{k} list is scored). Popularity: items by "
             f"training interactions, head / mid / tail each hold a third of them.", "",
             "Seeds: " + "; ".join(f"{m} {','.join(map(str, s))}" for m, s in seeds_of.items()), ""]
    titles = {"ndcg": f"NDCG@{k}", "recall": f"Recall@{k}",
              "share": f"Share of the top-{k} places held by the group's items (all users' lists)"}
    for metric in ("ndcg", "recall", "share"):
        lines += [f"**{titles[metric]}**", "",
                  "| group | items | test interactions | users | " + " | ".join(shown) + " |",
                  "|---|---|---|---|" + "---|" * len(shown)]
        for row in rows:
            values = [row.get(f"{m} {metric}") for m in shown]
            best = max((v for v in values if v is not None), default=None) if metric != "share" else None
            cells = [(f"**{cell(row, m, metric)}**" if v is not None and v == best and len(shown) > 1
                      else cell(row, m, metric)) for m, v in zip(shown, values)]
            lines.append(f"| {row['group']} | {row['items']} | {row['test interactions']} | {row['users']} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    if without:
        lines += [f"Left out (no top-K file: finished before the runner saved them; --retest_missing recovers "
                  f"them from their checkpoints): {', '.join(without)}.", ""]
    atomic_write_text(os.path.join(results_dir, "breakdown.md"), "\n".join(lines))
    _breakdown_chart(results_dir, rows, shown, k)
    log(f"[breakdown] wrote {os.path.join(results_dir, 'breakdown.md')}, breakdown.csv, breakdown.png")
    return rows


def _breakdown_chart(results_dir, rows, models, k):
    """Two panels: NDCG@k within each group, and the share of the top-k places each group's items hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(models))
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5.0, 1.1 * len(rows) + 2), 3.8))
    for ax, metric, label in ((axes[0], "ndcg", f"test NDCG@{k} within the group"),
                              (axes[1], "share", f"share of the top-{k} places")):
        for i, model in enumerate(models):
            means = [row.get(f"{model} {metric}") or 0.0 for row in rows]
            stds = [row.get(f"{model} {metric} std") or 0.0 for row in rows]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=model)
        ax.set_xticks(x, [row["group"] for row in rows], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
    axes[0].set_title(f"test NDCG@{k} per item group (mean ± std over seeds)", fontsize=9)
    axes[1].set_title(f"where the top-{k} lists' places go", fontsize=9)
    axes[0].legend(fontsize=7, ncol=2)
    return _save_figure(fig, os.path.join(results_dir, "breakdown.png"))
