"""The one saved split of a results folder: every model of a comparison trains and is tested on it.

The interactions are loaded once as a general (non-KG) model sees them on a KG dataset (KG-filtered,
:class:`recbole_mkg.data.KGFilteredDataset`), split once with ``split_seed`` and written as RecBole
benchmark files (``<dataset>.train/.valid/.test.inter``) into ``<results_dir>/split/``, beside links to the
dataset's other files and a KG/link pair filtered as the normal load path would. Every run reads that folder
(``benchmark_filename``), so every model, KG or not, sees exactly the same interactions.
"""
import json
import os

from recbole_mkg.atomic_io import atomic_write_json, atomic_write_text

SPLIT_PARTS = ("train", "valid", "test")


def split_folder(results_dir, dataset):
    """The folder of ``results_dir``'s saved split of ``dataset``: ``<results_dir>/split/<dataset>`` (absolute)."""
    return os.path.abspath(os.path.join(results_dir, "split", dataset))


def prepare_split(dataset, config_file_list=None, config_dict=None, results_dir="results", split_seed=None,
                  default_seed=2020):
    """Split the KG-filtered interactions once and save them as RecBole benchmark files.

    ``split_seed``: the seed of the split; ``None`` reuses the saved split whatever its seed, or makes a new
    one with ``default_seed``. A saved split made with another seed than an explicit ``split_seed`` is an
    error (the runs of one results folder must share one split).

    The split's files (data: never published) live in ``<results_dir>/split/``; its description (seed,
    sizes, no data) also goes to ``<results_dir>/split.json``, which travels with the results. A folder
    whose ``split/`` is gone (e.g. results copied from the docs) is split again with the recorded seed and
    must come out the same size; a folder with earlier runs and no record at all is an error unless
    ``split_seed`` is given, since a new split under old runs would compare runs on different test sets.

    Returns:
        dict: ``{"data_path": <folder holding <dataset>/>, "benchmark_filename": [train, valid, test],
        "sizes": {...}, "split_seed": int}``; the overrides every run of the comparison uses.
    """
    import numpy as np
    from recbole.utils import FeatureType, init_seed

    from recbole_mkg.compat.safe_checkpoints import to_plain
    from recbole_mkg.config import Config
    from recbole_mkg.data import create_dataset

    folder = split_folder(results_dir, dataset)
    split_root = os.path.dirname(folder)
    marker = os.path.join(folder, "split.json")
    record_path = os.path.join(results_dir, "split.json")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            info = json.load(f)
        if not os.path.isfile(record_path):  # folders made before the record existed
            atomic_write_json(record_path, info)
        if split_seed is not None and int(split_seed) != int(info["split_seed"]):
            raise ValueError(f"{folder} holds the split made with seed {info['split_seed']}, not {split_seed}: "
                             f"omit --split_seed (or pass {info['split_seed']}) to add runs to this comparison, "
                             f"or use another --results_dir for a new split")
        return {"data_path": split_root, "benchmark_filename": list(SPLIT_PARTS), "sizes": info["sizes"],
                "split_seed": int(info["split_seed"])}

    recorded = None
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as f:
            recorded = json.load(f)
        if recorded.get("dataset") == dataset:
            if split_seed is not None and int(split_seed) != int(recorded["split_seed"]):
                raise ValueError(f"{record_path}: the runs of this folder used the split made with seed "
                                 f"{recorded['split_seed']}, not {split_seed}: omit --split_seed (or pass "
                                 f"{recorded['split_seed']}), or use another --results_dir for a new split")
            split_seed = int(recorded["split_seed"])
        else:
            recorded = None
    elif split_seed is None and _earlier_runs(results_dir, dataset):
        raise ValueError(
            f"{results_dir} holds earlier runs on {dataset} but neither their split ({folder}) nor its record "
            f"({record_path}): pass --split_seed=<the seed their split was made with> (the first seed of the "
            f"command that made them, unless it gave --split_seed), so that new runs use the same split")
    split_seed = int(default_seed if split_seed is None else split_seed)
    overrides = dict(config_dict or {})
    overrides.update({"seed": split_seed, "benchmark_filename": None})
    config = Config(model="BPR", dataset=dataset, config_file_list=config_file_list, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    parts = data.build()
    source = os.path.abspath(config["data_path"])

    os.makedirs(folder, exist_ok=True)
    link_name, kg_name = f"{dataset}.link", f"{dataset}.kg"
    for entry in os.listdir(source):  # links to every file of the dataset (features, .item, ...)
        target = os.path.join(folder, entry)
        if not os.path.lexists(target) and not entry.startswith(".") and entry not in (link_name, kg_name):
            os.symlink(os.path.join(source, entry), target)

    sizes = {}
    for name, part in zip(SPLIT_PARTS, parts):
        inter = part.inter_feat
        columns, header = {}, []
        for field in inter.columns:
            ftype = data.field2type[field]
            values = inter[field].numpy()
            if ftype == FeatureType.TOKEN:
                columns[field] = data.id2token(field, values)
                header.append(f"{field}:token")
            elif ftype == FeatureType.FLOAT:
                columns[field] = values
                header.append(f"{field}:float")
        rows = ["\t".join(header)]
        cols = [columns[h.split(":")[0]] for h in header]
        rows.extend("\t".join(map(str, r)) for r in zip(*cols))
        atomic_write_text(os.path.join(folder, f"{dataset}.{name}.inter"), "\n".join(rows) + "\n")
        sizes[name] = int(len(inter))
    if os.path.isfile(os.path.join(source, kg_name)):
        _write_filtered_kg_and_link(data, config, source, folder, dataset, parts)
    info = {"dataset": dataset, "source": source, "split_seed": split_seed,
            "eval_args": str(config["eval_args"]), "sizes": sizes,
            "drop_relations": to_plain(config["drop_relations"]),
            "users": int(data.user_num - 1), "items": int(data.item_num - 1),
            "interactions": int(np.sum(list(sizes.values())))}
    if recorded is not None and recorded.get("sizes") not in (None, sizes):
        raise ValueError(f"{record_path}: the split made again with seed {split_seed} has sizes {sizes}, the "
                         f"recorded one {recorded['sizes']}: the data or the protocol changed since the earlier "
                         f"runs ({folder} is left for inspection); use another --results_dir")
    atomic_write_json(marker, info)
    atomic_write_json(record_path, info)
    return {"data_path": split_root, "benchmark_filename": list(SPLIT_PARTS), "sizes": sizes,
            "split_seed": split_seed}


def _earlier_runs(results_dir, dataset):
    """Run records (``runs/*.json``) of ``dataset`` in ``results_dir``."""
    runs = os.path.join(results_dir, "runs")
    found = []
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        if name.endswith(".json") and not name.endswith(".failed.json"):
            try:
                with open(os.path.join(runs, name), encoding="utf-8") as f:
                    if json.load(f).get("dataset") == dataset:
                        found.append(name)
            except (OSError, ValueError):
                continue
    return found


def _write_filtered_kg_and_link(data, config, source, folder, dataset, parts):
    """The ``.kg`` and ``.link`` rows that the normal (filtering) load path would keep.

    RecBole skips all filtering when it reads benchmark files, so the split folder gets the KG without
    the triples of ``drop_relations`` and a ``.link`` restricted to interacted items whose entity is in
    that KG (RecBole's KG dataset fails on link rows of items without interactions).
    """
    import pandas as pd

    from recbole_mkg.data.dataset import relations_to_drop

    def read(path):
        return pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False, engine="c")

    drop = relations_to_drop(config)
    kg_path, link_path = os.path.join(source, f"{dataset}.kg"), os.path.join(source, f"{dataset}.link")
    if drop:
        kg = read(kg_path)
        kg = kg[~kg.iloc[:, 1].isin(drop)]
        atomic_write_text(os.path.join(folder, f"{dataset}.kg"), kg.to_csv(sep="\t", index=False, quoting=3))
    else:
        os.symlink(kg_path, os.path.join(folder, f"{dataset}.kg"))
        kg = read(kg_path)
    if not os.path.isfile(link_path):
        return
    link = read(link_path)
    item_col = next(c for c in link.columns if c.split(":")[0] == data.iid_field)
    entity_col = next(c for c in link.columns if c != item_col)
    items = set()
    for part in parts:
        items.update(data.id2token(data.iid_field, part.inter_feat[data.iid_field].numpy()).tolist())
    entities = set(kg.iloc[:, 0]) | set(kg.iloc[:, 2])
    keep = link[item_col].isin(items) & link[entity_col].isin(entities)
    atomic_write_text(os.path.join(folder, f"{dataset}.link"), link[keep].to_csv(sep="\t", index=False, quoting=3))


def make_split(dataset, config_file_list=None, config_dict=None, results_dir=None, split_seed=None, log=print):
    """Make (or check) ``results_dir``'s saved split and run nothing: what ``--split_only`` does, e.g. before
    the folder travels to another machine (``scripts/offline_gpu_bundle.sh``). Same arguments and return
    value as :func:`prepare_split`; relative folders in ``config_dict`` are resolved here."""
    from recbole_mkg.config import absolute_paths

    results_dir = os.path.abspath(results_dir or os.path.join("results", dataset))
    os.makedirs(results_dir, exist_ok=True)
    config_file_list = [os.path.abspath(p) for p in (config_file_list or [])]
    split = prepare_split(dataset, config_file_list, absolute_paths(config_dict), results_dir, split_seed)
    log(f"[split] {dataset} (seed {split['split_seed']}) train/valid/test = {split['sizes']} in {split['data_path']}")
    return split

