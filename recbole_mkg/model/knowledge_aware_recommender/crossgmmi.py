r"""CrossGMMI-DUKGLR: knowledge-graph-based personalized multimodal recommendation fusion framework.

Reference:
    "Knowledge graph-based personalized multimodal recommendation fusion framework", arXiv 2509.02943
    (CrossGMMI-DUKGLR). No public code exists; this is a reference implementation of the method as described.

Components (equations as the paper states them; shapes in the docstrings):

* **Features.** BERT-family text and CLIP image vectors per entity (any dimension), from the dataset's
  feature files and presence masks (:class:`~recbole_mkg.data.dataset.MultimodalKGDataset`).
* **Cross-modal fusion** (:class:`~recbole_mkg.model.graph_encoder.ModalFusion`): text queries attend to
  visual keys/values, softmax(Q^t K^{vT} / sqrt(d)) V^v, multi-head, residual + LayerNorm
  (``fusion: text_to_visual``); ``bidirectional`` adds visual queries over text; ``concat`` is the ablation.
  Node input x_e = e_e + fused_e (users: e_u); an entity without a modality never receives an invented vector.
* **Structure** (:class:`~recbole_mkg.model.graph_encoder.RelationalGAT`): relation-aware GAT,
  alpha_ij = softmax_j(e_ij) with e_ij built from the entity, the relation and the neighbour,
  h_i^{l+1} = sigma(sum_j alpha_ij m_ij) + Jump(h_i^l), 2 hops by default, Jumping Knowledge
  (``jk_mode``: cat | max | lstm | last) over the collaborative KG (user-item edges + KG triples, both ways).
* **Phase 1, pre-training** (:mod:`recbole_mkg.model.alignment`): L_MI = InfoNCE between z_i^A and z_i^B,
  the representations of entity i in two KGs (``pretrain_second_kg``; pairs keyed by item token), with
  temperature tau and in-batch plus sampled negatives; with one KG, between two augmented views (edge
  dropout, feature masking) of it. The encoder and the entity/relation embeddings are saved to a file keyed
  by entity/relation *token*; Hits@1/10 and MRR on held-out pairs are logged.
* **Phase 2, fine-tuning**: y(u, i) = h_u^T h_i, BPR (``rec_loss: bce`` for binary cross-entropy), starting
  from a pre-trained file (``pretrained_path``, or phase 1 of the same run), with dynamic negative sampling
  (hard negatives by the current scores mixed with RecBole's uniform ones,
  :class:`~recbole_mkg.model.contrastive.DynamicNegativeSampler`) and graph augmentation (edge dropout and
  feature masking at every training step).

Trained by :class:`recbole_mkg.trainer.CrossGMMITrainer` (``train_stage``: pretrain_finetune | pretrain |
finetune). Choices where the paper is vague are listed in docs/models.md.
"""
import os

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_mkg.compat.safe_checkpoints import atomic_torch_save, load_checkpoint
from recbole_mkg.data.dataset import MultimodalKGDataset, requested_modalities
from recbole_mkg.model.abstract_recommender import FullGraphKGRecommender
from recbole_mkg.model.alignment import CrossKGContrast, KGraph, KGSide, side_for_graph, split_pairs
from recbole_mkg.model.contrastive import DynamicNegativeSampler
from recbole_mkg.model.edge_aggregation import cached_sorted_edges
from recbole_mkg.model.graph_encoder import MKGEncoder, kg_edges
from recbole_mkg.model.knowledge_aware_recommender.multikg4rec import _check_positive_int

PRETRAINED_FORMAT = "recbole_mkg.crossgmmi.pretrained.v1"
TRAIN_STAGES = ("pretrain_finetune", "pretrain", "finetune")
REC_LOSSES = ("bpr", "bce")
INVERSE_SUFFIX = "~inverse"


def _check_probability(config, key):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"config '{key}' must be a number in [0, 1), got {value!r}")
    return float(value)


class CrossGMMI(FullGraphKGRecommender):
    dataset_class = MultimodalKGDataset

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = _check_positive_int(config, "embedding_size")
        self.reg_weight = config["reg_weight"]
        self.modalities = requested_modalities(config)
        self.train_stage = config["train_stage"]
        if self.train_stage not in TRAIN_STAGES:
            raise ValueError(f"config 'train_stage': {self.train_stage!r} is not one of {list(TRAIN_STAGES)}")
        self.rec_loss = str(config["rec_loss"]).lower()
        if self.rec_loss not in REC_LOSSES:
            raise ValueError(f"config 'rec_loss': {config['rec_loss']!r} is not one of {list(REC_LOSSES)}")
        self.aug_edge_drop = _check_probability(config, "aug_edge_drop")
        self.aug_feature_mask = _check_probability(config, "aug_feature_mask")

        # ---- embeddings: users, entities (items are entities 1..n_items-1), relations and their inverses ----
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.entity_embedding = nn.Embedding(self.n_entities, self.embedding_size)
        self.relation_embedding = nn.Embedding(2 * self.n_relations, self.embedding_size)
        modal_dims = {}
        for m in self.modalities:
            if m not in getattr(dataset, "modal_features", {}):
                raise ValueError(f"dataset has no {m!r} features loaded; CrossGMMI needs a MultimodalKGDataset")
            self.register_buffer(f"features_{m}", dataset.modal_features[m].clone(), persistent=False)
            self.register_buffer(f"mask_{m}", dataset.modal_masks[m].clone(), persistent=False)
            modal_dims[m] = dataset.modal_features[m].shape[1]

        # ---- encoder: cross-modal fusion + relation-aware GAT with Jumping Knowledge ----
        self.encoder = MKGEncoder(
            modal_dims, self.embedding_size, fusion=config["fusion"],
            n_tokens=_check_positive_int(config, "n_modal_tokens"), n_heads=_check_positive_int(config, "n_heads"),
            gat_layers=config["gat_layers"], gat_heads=_check_positive_int(config, "gat_heads"),
            jk_mode=config["jk_mode"], dropout=_check_probability(config, "mess_dropout"),
        )

        if self.encoder.fusion is not None:  # the entities fusion changes (fixed masks, computed once)
            self.register_buffer("modal_rows", self.encoder.modal_rows(self.modal_inputs()[1]), persistent=False)

        # ---- graphs: the collaborative KG (fine-tuning) and the KG alone (pre-training) ----
        ckg = dataset.ckg_graph(form="coo", value_field="relation_id")
        head, tail, rel = (torch.from_numpy(a.astype(np.int64)) for a in (ckg.row, ckg.col, ckg.data))
        ui = rel == self.n_relations - 1  # [UI-Relation] edges are already in both directions
        kg_head, kg_tail, kg_rel = kg_edges(head[~ui], rel[~ui], tail[~ui], self.n_relations)
        for name, e in zip(("ckg_head", "ckg_tail", "ckg_relation"),
                           (torch.cat([head[ui], kg_head]), torch.cat([tail[ui], kg_tail]),
                            torch.cat([rel[ui], kg_rel]))):
            self.register_buffer(name, e, persistent=False)
        kg = kg_edges(torch.as_tensor(dataset.head_entities), torch.as_tensor(dataset.kg_feat[dataset.relation_field]),
                      torch.as_tensor(dataset.tail_entities), self.n_relations)
        for name, e in zip(("kg_head", "kg_tail", "kg_relation"), kg):
            self.register_buffer(name, e, persistent=False)

        # ---- dynamic negative sampling over the training interactions ----
        self.negative_sampler = DynamicNegativeSampler(
            self.n_items, dataset.inter_feat[self.USER_ID], dataset.inter_feat[self.ITEM_ID],
            config["dns_candidates"], config["hard_neg_ratio"],
        )

        # ---- tokens: pre-trained weights are keyed by them (RecBole remaps ids per dataset) ----
        self.entity_tokens = [str(t) for t in dataset.field2id_token[dataset.entity_field]]
        rel_tokens = [str(t) for t in dataset.field2id_token[dataset.relation_field]]
        self.relation_tokens = rel_tokens + [t + INVERSE_SUFFIX for t in rel_tokens]
        self.item_tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]

        self.apply(xavier_normal_initialization)
        self.config = config

    # ---- encoder -------------------------------------------------------------------------------------
    def modal_inputs(self):
        return ({m: getattr(self, f"features_{m}") for m in self.modalities},
                {m: getattr(self, f"mask_{m}") for m in self.modalities})

    def forward(self):
        """User [n_users, D] and entity [n_entities, D] representations over the CKG, D = encoder.output_dim.
        In training mode the graph is augmented (edge dropout ``aug_edge_drop``, feature masking
        ``aug_feature_mask``)."""
        augment = self.training
        features, masks = self.modal_inputs()
        entities = self.encoder.node_inputs(self.entity_embedding.weight, features, masks,
                                            self.aug_feature_mask if augment else 0.0, getattr(self, "modal_rows", None))
        x = torch.cat([self.user_embedding.weight, entities], dim=0)
        edges = cached_sorted_edges(self, (self.ckg_head, self.ckg_tail, self.ckg_relation), x.size(0))
        out = self.encoder(x, self.relation_embedding.weight, edges, self.aug_edge_drop if augment else 0.0)
        return torch.split(out, [self.n_users, self.n_entities])

    # ---- fine-tuning -----------------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        """BPR (or BCE) with dynamic hard negatives, + L2 on the batch's ID embeddings."""
        self.invalidate_cache()
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        user_all, entity_all = self.forward()
        neg_item = self.negative_sampler.sample(user, interaction[self.NEG_ITEM_ID], user_all.detach(),
                                                entity_all[: self.n_items].detach())
        u = user_all[user]
        pos_score = (u * entity_all[pos_item]).sum(dim=1)
        neg_score = (u * entity_all[neg_item]).sum(dim=1)
        if self.rec_loss == "bpr":
            loss = self.mf_loss(pos_score, neg_score)
        else:
            loss = F.binary_cross_entropy_with_logits(torch.cat([pos_score, neg_score]),
                                                      torch.cat([torch.ones_like(pos_score), torch.zeros_like(neg_score)]))
        reg = self.reg_loss(self.user_embedding(user), self.entity_embedding(pos_item), self.entity_embedding(neg_item))
        return loss + self.reg_weight * reg

    # ---- pre-training ----------------------------------------------------------------------------------
    def kg_side(self):
        """This dataset's KG (entities only, no users) through the shared encoder and embeddings."""
        features, masks = self.modal_inputs()
        return KGSide(self.encoder, self.entity_embedding, self.relation_embedding,
                      (self.kg_head, self.kg_tail, self.kg_relation), features, masks)

    def build_pretrain_task(self, config, logger=None):
        """The InfoNCE task of phase 1.  Returns ``(task, train_pairs [P, 2], test_pairs [Q, 2] or None)``."""
        side_a = self.kg_side()
        second = config["pretrain_second_kg"]
        kwargs = dict(temperature=config["pretrain_temperature"], n_negatives=config["pretrain_neg_samples"],
                      edge_drop=config["pretrain_edge_drop"], feature_mask=config["pretrain_feature_mask"],
                      dim=self.embedding_size)
        if second:
            folder = second if os.path.isdir(second) else os.path.join(config["data_path"], "..", second)
            if not os.path.isdir(folder):
                folder = os.path.join(os.path.dirname(os.path.normpath(config["data_path"])), second)
            name = os.path.basename(os.path.normpath(folder))
            if not os.path.isfile(os.path.join(folder, f"{name}.kg")):
                raise FileNotFoundError(
                    f"config 'pretrain_second_kg': {second!r}: no {name}.kg in {folder}; give a dataset folder, or "
                    f"a dataset name in the data_path folder")
            graph = KGraph.from_atomic(folder, name, self.modalities, config["feature_files"],
                                       config["feature_cache_dir"], logger)
            side_b = side_for_graph(self.encoder, graph, self.embedding_size).to(self.entity_embedding.weight.device)
            pairs = [(i, graph.item_entity[t]) for i, t in enumerate(self.item_tokens) if i and t in graph.item_entity]
            if len(pairs) < 2:
                raise ValueError(f"second KG {name!r} shares {len(pairs)} item tokens with {config['dataset']!r}; "
                                 f"the two KGs must describe the same items (same item_id tokens in their .link files)")
            train, test = split_pairs(torch.tensor(pairs), config["alignment_test_ratio"], config["seed"])
            if logger:
                logger.info(f"pre-training: InfoNCE between the KG of {config['dataset']!r} and {name!r} "
                            f"({graph.n_entities - 1} entities, {len(graph.head)} triples): {len(pairs)} items "
                            f"aligned by item token, {len(train)} for training, {len(test)} held out for alignment")
            task = CrossKGContrast(side_a, side_b, train, **kwargs)
            return task, train, test
        ids = torch.arange(1, self.n_entities)
        if logger:
            logger.warning(f"pre-training: no second KG (config pretrain_second_kg), so InfoNCE contrasts two "
                           f"augmented views of the KG of {config['dataset']!r} (edge dropout "
                           f"{config['pretrain_edge_drop']}, feature masking {config['pretrain_feature_mask']}); "
                           f"no alignment metrics in this mode")
        pairs = torch.stack([ids, ids], dim=1)
        return CrossKGContrast(side_a, side_a, pairs, **kwargs), pairs, None

    def pretrained_state(self):
        """What phase 2 loads: encoder weights and entity/relation embeddings keyed by token."""
        return {
            "format": PRETRAINED_FORMAT,
            "dataset": str(self.config["dataset"]),
            "entity_tokens": self.entity_tokens,
            "entity_embedding": self.entity_embedding.weight.detach().cpu().clone(),
            "relation_tokens": self.relation_tokens,
            "relation_embedding": self.relation_embedding.weight.detach().cpu().clone(),
            "encoder": {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()},
        }

    def save_pretrained(self, path, extra=None):
        state = self.pretrained_state()
        state.update(extra or {})
        atomic_torch_save(state, path)
        return path

    @torch.no_grad()
    def load_pretrained(self, path):
        """Copy the rows of a pre-trained file whose entity/relation token exists in this dataset, and the
        encoder tensors of matching name and shape.  Returns a report dict (also what the log says)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config 'pretrained_path': {path} not found")
        state = load_checkpoint(path)  # clear errors for a damaged file
        if not isinstance(state, dict) or state.get("format") != PRETRAINED_FORMAT:
            raise ValueError(f"{path} is not a CrossGMMI pre-trained file (format {PRETRAINED_FORMAT})")
        report = {"file": path}
        for kind, tokens, table in (("entity", self.entity_tokens, self.entity_embedding),
                                    ("relation", self.relation_tokens, self.relation_embedding)):
            source = state[f"{kind}_embedding"]
            if source.shape[1] != table.embedding_dim:
                raise ValueError(f"{path}: {kind} embeddings have size {source.shape[1]}, this model "
                                 f"{table.embedding_dim} (embedding_size must match the pre-training run)")
            position = {t: i for i, t in reversed(list(enumerate(state[f"{kind}_tokens"])))}  # first wins
            index = pd.Series(tokens).map(position).fillna(-1).to_numpy(np.int64)
            index[0] = -1  # padding row 0 is never matched
            rows = np.flatnonzero(index >= 0)
            table.weight[torch.from_numpy(rows)] = source[torch.from_numpy(index[rows])].to(table.weight)
            report[f"{kind}_rows_matched"] = int(len(rows))
            report[f"{kind}_rows"] = len(tokens) - 1
        own = self.encoder.state_dict()
        loadable = {k: v for k, v in state["encoder"].items() if k in own and own[k].shape == v.shape}
        own.update(loadable)
        self.encoder.load_state_dict(own)
        report["encoder_tensors_loaded"] = len(loadable)
        report["encoder_tensors"] = len(own)
        self.invalidate_cache()
        return report
