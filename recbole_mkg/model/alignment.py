r"""Cross-KG contrastive pre-training and entity-alignment evaluation (CrossGMMI-DUKGLR, phase 1).

* :class:`KGraph` - a knowledge graph as plain tensors: entity/relation tokens, triples, optional per-entity
  modal features and presence masks; read from RecBole atomic ``.kg``/``.link`` files and feature files.
* :class:`KGSide` - one KG seen through the shared :class:`~recbole_mkg.model.graph_encoder.MKGEncoder`,
  with its own entity ID and relation embeddings (ids are per-KG; the encoder weights are shared).
* :class:`CrossKGContrast` - the InfoNCE objective between the representations of the same entity on two
  sides (two KGs, or two augmented views of one KG), symmetric (A->B and B->A), with in-batch negatives
  plus ``n_negatives`` uniformly sampled entities of the other side, and Hits@k/MRR evaluation on held-out
  pairs (candidates: the held-out pairs' counterparts, the DBP15K protocol).
* :class:`PairBatches` - shuffled mini-batches of anchor pairs as RecBole ``Interaction`` objects, so the
  pre-training epochs run through RecBole's ``Trainer._train_epoch`` (progress bar, loss logging).
* :func:`run_alignment` and ``python -m recbole_mkg.model.alignment`` - stand-alone alignment training and
  evaluation on two KG files and pair files (DBP15K after ``python -m dataset_tools convert-dbp15k``).
"""
import argparse
import json
import os
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from recbole.data.interaction import Interaction

from recbole_mkg.data.features import align_features, load_feature_file
from recbole_mkg.data.dataset import read_atomic_table
from recbole_mkg.model.contrastive import alignment_metrics, info_nce
from recbole_mkg.model.edge_aggregation import cached_sorted_edges
from recbole_mkg.model.graph_encoder import MKGEncoder, kg_edges

PAD = "[PAD]"


class KGraph:
    """A KG as tensors. Entity id 0 is padding (as in RecBole); ids follow first appearance.

    Attributes:
        entity_tokens (np.ndarray): [n_entities] str; relation_tokens [n_relations] str (no padding).
        head, relation, tail (Tensor): [T] long triples.
        features, masks (dict): modality -> [n_entities, D] float / [n_entities] bool.
        item_entity (dict): item token -> entity id (from the ``.link`` file, when there is one).
    """

    def __init__(self, head_tokens, relation_tokens, tail_tokens, name="kg"):
        self.name = name
        ent = pd.unique(np.concatenate([np.asarray(head_tokens, dtype=object), np.asarray(tail_tokens, dtype=object)]))
        self.entity_tokens = np.concatenate([[PAD], ent]).astype(object)
        self.token2id = {t: i for i, t in enumerate(self.entity_tokens)}
        rel = pd.unique(np.asarray(relation_tokens, dtype=object))
        self.relation_tokens = rel.astype(object)
        rel2id = {t: i for i, t in enumerate(rel)}
        self.head = torch.as_tensor(pd.Series(head_tokens).map(self.token2id).to_numpy(np.int64))
        self.tail = torch.as_tensor(pd.Series(tail_tokens).map(self.token2id).to_numpy(np.int64))
        self.relation = torch.as_tensor(pd.Series(relation_tokens).map(rel2id).to_numpy(np.int64))
        self.features, self.masks, self.item_entity = {}, {}, {}

    @property
    def n_entities(self):
        return len(self.entity_tokens)

    @property
    def n_relations(self):
        return len(self.relation_tokens)

    @classmethod
    def from_kg_file(cls, path, name=None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: KG file not found")
        df = read_atomic_table(path)
        missing = {"head_id", "relation_id", "tail_id"} - set(df.columns)
        if missing:
            raise ValueError(f"{path}: KG file lacks columns {sorted(missing)} (header head_id:token ...)")
        return cls(df["head_id"].values, df["relation_id"].values, df["tail_id"].values,
                   name=name or os.path.basename(path))

    @classmethod
    def from_atomic(cls, folder, name, modalities=(), feature_files=None, cache_dir=None, logger=None):
        """``<folder>/<name>.kg`` (+ ``.link`` for items, + ``<name>.<suffix>`` feature files when present;
        a modality whose file is missing is all-masked, and said in the log)."""
        graph = cls.from_kg_file(os.path.join(folder, f"{name}.kg"), name=name)
        link_path = os.path.join(folder, f"{name}.link")
        if os.path.isfile(link_path):
            link = read_atomic_table(link_path)
            known = link[link["entity_id"].isin(graph.token2id)]
            graph.item_entity = dict(zip(known["item_id"], known["entity_id"].map(graph.token2id)))
        for m in modalities:
            suffix = (feature_files or {}).get(m)
            path = os.path.join(folder, f"{name}.{suffix}") if suffix else None
            if path and os.path.isfile(path):
                table = load_feature_file(path, cache_dir=cache_dir)
                token2id = graph.token2id if table.id_field == "entity_id" else graph.item_entity
                matrix, mask, _ = align_features(table, token2id, graph.n_entities)
                graph.features[m], graph.masks[m] = torch.from_numpy(matrix), torch.from_numpy(mask)
            elif logger is not None:
                logger.warning(f"second KG {name!r}: no {m} feature file ({path}); its entities have no {m} "
                               f"features (masked)")
        return graph

    def fill_missing_modalities(self, modal_dims):
        """All-masked zero features for modalities the encoder uses but this KG lacks."""
        for m, d in modal_dims.items():
            if m not in self.features:
                self.features[m] = torch.zeros(self.n_entities, d)
                self.masks[m] = torch.zeros(self.n_entities, dtype=torch.bool)


class KGSide(nn.Module):
    """One KG through the shared encoder: x = e_id + fused(features), then relation-aware GAT + JK.

    ``entity_embedding`` / ``relation_embedding`` are ``nn.Embedding`` modules (shared with the model for
    the recommendation KG; new ones for a second KG). ``relation_embedding`` has 2 R rows (inverse edges)."""

    def __init__(self, encoder, entity_embedding, relation_embedding, edges, features, masks):
        super().__init__()
        self.encoder = encoder
        self.entity_embedding = entity_embedding
        self.relation_embedding = relation_embedding
        for name, e in zip(("edge_head", "edge_tail", "edge_relation"), edges):
            self.register_buffer(name, e, persistent=False)
        self.modalities = list(encoder.modalities)
        for m in self.modalities:
            self.register_buffer(f"features_{m}", features[m], persistent=False)
            self.register_buffer(f"mask_{m}", masks[m], persistent=False)
        if encoder.fusion is not None:
            self.register_buffer("modal_rows", encoder.modal_rows(masks), persistent=False)

    @property
    def n_entities(self):
        return self.entity_embedding.num_embeddings

    def forward(self, edge_drop=0.0, feature_mask=0.0):
        """-> [n_entities, encoder.output_dim]."""
        features = {m: getattr(self, f"features_{m}") for m in self.modalities}
        masks = {m: getattr(self, f"mask_{m}") for m in self.modalities}
        x = self.encoder.node_inputs(self.entity_embedding.weight, features, masks, feature_mask,
                                     getattr(self, "modal_rows", None))
        edges = cached_sorted_edges(self, (self.edge_head, self.edge_tail, self.edge_relation), x.size(0))
        return self.encoder(x, self.relation_embedding.weight, edges, edge_drop)


def side_for_graph(encoder, graph, dim):
    """A :class:`KGSide` with fresh ID/relation embeddings for a :class:`KGraph`."""
    graph.fill_missing_modalities({m: p.in_features for m, p in
                                   (encoder.fusion.projection.items() if encoder.fusion else [])})
    entity = nn.Embedding(graph.n_entities, dim)
    relation = nn.Embedding(2 * graph.n_relations, dim)
    nn.init.xavier_normal_(entity.weight)
    nn.init.xavier_normal_(relation.weight)
    edges = kg_edges(graph.head, graph.relation, graph.tail, graph.n_relations)
    return KGSide(encoder, entity, relation, edges, graph.features, graph.masks)


class CrossKGContrast(nn.Module):
    """Symmetric InfoNCE between two sides on anchor pairs (see the module docstring).

    Args:
        side_a, side_b (KGSide): the two KGs (the same object for two augmented views of one KG).
        train_pairs (Tensor): [P, 2] long, entity id in A, entity id in B.
        temperature (float): tau.
        n_negatives (int): sampled negatives per batch and direction (besides the in-batch ones).
        edge_drop, feature_mask (float): augmentation of each side's graph at every step.
        dim (int): projection-head output size.
    """

    def __init__(self, side_a, side_b, train_pairs, temperature=0.1, n_negatives=64, edge_drop=0.0,
                 feature_mask=0.0, dim=64):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"config 'pretrain_temperature' must be positive, got {temperature!r}")
        if edge_drop < 0 or edge_drop >= 1 or feature_mask < 0 or feature_mask >= 1:
            raise ValueError("config 'pretrain_edge_drop' / 'pretrain_feature_mask' must be in [0, 1)")
        self.side_a, self.side_b = side_a, side_b
        self.views = side_a is side_b
        if self.views and edge_drop == 0 and feature_mask == 0:
            raise ValueError("pre-training on two views of one KG needs pretrain_edge_drop or pretrain_feature_mask > 0"
                             " (otherwise both views are identical)")
        self.register_buffer("train_pairs", train_pairs.long(), persistent=False)
        self.temperature, self.n_negatives = temperature, n_negatives
        self.edge_drop, self.feature_mask = edge_drop, feature_mask
        out = side_a.encoder.output_dim
        self.projection = nn.Sequential(nn.Linear(out, out), nn.ELU(), nn.Linear(out, dim))

    def represent(self, side, augment):
        p = (self.edge_drop, self.feature_mask) if augment else (0.0, 0.0)
        return self.projection(side(*p))

    def loss(self, interaction):
        """InfoNCE of the batch's anchor pairs (``interaction["pair"]``: indices into ``train_pairs``)."""
        pairs = self.train_pairs[interaction["pair"]]
        a_ids, b_ids = pairs[:, 0], pairs[:, 1]
        z_a = self.represent(self.side_a, True)
        z_b = self.represent(self.side_b, True)
        device = a_ids.device
        neg_b = torch.randint(1, self.side_b.n_entities, (self.n_negatives,), device=device)
        neg_a = torch.randint(1, self.side_a.n_entities, (self.n_negatives,), device=device)
        forward = info_nce(z_a[a_ids], z_b[b_ids], self.temperature, z_b[neg_b], b_ids, neg_b)
        backward = info_nce(z_b[b_ids], z_a[a_ids], self.temperature, z_a[neg_a], a_ids, neg_a)
        return (forward + backward) / 2

    @torch.no_grad()
    def evaluate(self, test_pairs):
        """Hits@1/10 and MRR of A->B retrieval of the held-out pairs (no augmentation)."""
        was_training = self.training
        self.eval()
        z_a = self.represent(self.side_a, False)
        z_b = z_a if self.views else self.represent(self.side_b, False)
        test_pairs = test_pairs.to(z_a.device)
        result = alignment_metrics(z_a[test_pairs[:, 0]], z_b[test_pairs[:, 1]],
                                   torch.arange(len(test_pairs), device=z_a.device))
        self.train(was_training)
        return result


class PairBatches:
    """Shuffled batches ``Interaction({"pair": indices})`` over ``n_pairs`` anchors (a RecBole-style loader)."""

    def __init__(self, n_pairs, batch_size, seed=0):
        if n_pairs < 2:
            raise ValueError(f"pre-training needs at least 2 anchor pairs, got {n_pairs}")
        self.n_pairs, self.batch_size, self.shuffle = n_pairs, batch_size, True
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return (self.n_pairs + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.n_pairs, generator=self.generator)
        for start in range(0, self.n_pairs, self.batch_size):
            yield Interaction({"pair": order[start:start + self.batch_size]})


def split_pairs(pairs, test_ratio, seed):
    """Random held-out split of [P, 2] pairs -> (train, test)."""
    if not 0 <= test_ratio < 1:
        raise ValueError(f"config 'alignment_test_ratio' must be in [0, 1), got {test_ratio!r}")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(pairs) * test_ratio))
    return pairs[order[n_test:]], pairs[order[:n_test]]


def read_pairs(path, graph_a, graph_b):
    """Pair file (``entity_1:token  entity_2:token``) -> [P, 2] long ids in the two graphs."""
    df = read_atomic_table(path)
    a = df.iloc[:, 0].map(graph_a.token2id)
    b = df.iloc[:, 1].map(graph_b.token2id)
    ok = a.notna() & b.notna()
    if not ok.all():
        raise ValueError(f"{path}: {int((~ok).sum())} pairs name entities absent from the KG files "
                         f"(e.g. line {int(np.flatnonzero(~ok.values)[0]) + 2})")
    return torch.as_tensor(np.stack([a.to_numpy(np.int64), b.to_numpy(np.int64)], 1))


def run_alignment(graph_a, graph_b, train_pairs, test_pairs, dim=64, gat_layers=2, gat_heads=2, jk_mode="cat",
                  dropout=0.0, temperature=0.1, n_negatives=256, edge_drop=0.1, epochs=50, batch_size=512,
                  learning_rate=0.001, eval_every=10, seed=2020, device="cpu", log=print):
    """Train the shared encoder on two KGs with InfoNCE on ``train_pairs``; evaluate on ``test_pairs``.

    Structure-only (no modal features). Returns ``{"history": [...], "final": metrics, "seconds": ...}``."""
    torch.manual_seed(seed)
    encoder = MKGEncoder({}, dim, gat_layers=gat_layers, gat_heads=gat_heads, jk_mode=jk_mode, dropout=dropout)
    side_a, side_b = side_for_graph(encoder, graph_a, dim), side_for_graph(encoder, graph_b, dim)
    task = CrossKGContrast(side_a, side_b, train_pairs, temperature, n_negatives, edge_drop, 0.0, dim).to(device)
    optimizer = torch.optim.Adam(task.parameters(), lr=learning_rate)
    batches = PairBatches(len(train_pairs), batch_size, seed)
    history, start = [], time.time()
    for epoch in range(epochs):
        task.train()
        total = 0.0
        for interaction in batches:
            optimizer.zero_grad()
            loss = task.loss(interaction.to(device))
            loss.backward()
            optimizer.step()
            total += loss.item()
        entry = {"epoch": epoch, "loss": total / len(batches)}
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            entry.update(task.evaluate(test_pairs))
        history.append(entry)
        log(json.dumps(entry))
    return {"history": history, "final": history[-1], "seconds": time.time() - start}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m recbole_mkg.model.alignment",
                                description="Entity alignment with CrossGMMI's encoder and InfoNCE (structure only). "
                                            "Reads <folder>/<name>_1.kg, <name>_2.kg, <name>.align_train, "
                                            "<name>.align_test (python -m dataset_tools convert-dbp15k writes them).")
    p.add_argument("folder")
    p.add_argument("--name", help="file prefix (default: the folder's name)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--gat-layers", type=int, default=2)
    p.add_argument("--jk-mode", default="cat")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--negatives", type=int, default=256)
    p.add_argument("--edge-drop", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--json", help="write the history and final metrics here")
    args = p.parse_args(argv)
    name = args.name or os.path.basename(os.path.normpath(args.folder))
    f = lambda suffix: os.path.join(args.folder, f"{name}{suffix}")  # noqa: E731
    graph_a, graph_b = KGraph.from_kg_file(f("_1.kg")), KGraph.from_kg_file(f("_2.kg"))
    train, test = read_pairs(f(".align_train"), graph_a, graph_b), read_pairs(f(".align_test"), graph_a, graph_b)
    print(f"KG1 {graph_a.n_entities - 1} entities / {len(graph_a.head)} triples, KG2 {graph_b.n_entities - 1} / "
          f"{len(graph_b.head)}; {len(train)} train pairs, {len(test)} test pairs")
    result = run_alignment(graph_a, graph_b, train, test, dim=args.dim, gat_layers=args.gat_layers,
                           jk_mode=args.jk_mode, temperature=args.temperature, n_negatives=args.negatives,
                           edge_drop=args.edge_drop, epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.lr, eval_every=args.eval_every, seed=args.seed)
    print(f"final: {result['final']}  ({result['seconds']:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(dict(result, args=vars(args)), out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
