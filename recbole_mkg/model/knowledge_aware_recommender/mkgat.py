r"""MKGAT: multi-modal knowledge graph attention network (baseline).

Reference:
    Rui Sun, Xuezhi Cao, Yan Zhao, Junchen Wan, Kun Zhou, Fuzheng Zhang, Zhongyuan Wang, Kai Zheng.
    "Multi-modal Knowledge Graphs for Recommender Systems." in CIKM 2020.
    No runnable public code exists; this is a reimplementation from the paper.

* **Multi-modal KG.** Images and texts are entities of their own: every entity with an image gets an image
  node linked by the new relation ``has_image``, every entity with a text a text node by ``has_text``
  (edge entity -> modal node). Entities without a modality get no such node (no invented vectors).
* **MKGs entity encoder.** Structural entities and users: ID embeddings; image / text nodes: a
  modality-specific projection W_m f + b_m of their feature vector (any dimension).
* **MKGs attention layer.** e(h,r,t) = W_1 [e_h || e_r || e_t] (computed as W_1^h e_h + W_1^r e_r + W_1^t e_t),
  pi(h,r,t) = LeakyReLU(W_2 e(h,r,t)) normalised by a segment softmax over each head's triples
  (``torch_geometric.utils.softmax``), e_{N_h} = sum pi(h,r,t) e(h,r,t); aggregation
  ``add``: W_3 e_h + e_{N_h}, or ``concat``: W_4 [e_h || e_{N_h}]; LeakyReLU and message dropout.
* **KG embedding module.** TransE on the representations after the first attention layer (shared with the
  recommendation module): d(h,r,t) = ||h + r - t||_2 on L2-normalised vectors, margin loss
  max(0, gamma + d(h,r,t) - d(h,r,t')); the negative tail t' keeps the tail's type (an image tail is
  replaced by another image node, a text tail by another text node, a structural tail by another
  structural entity) and is never the true tail. Each KG batch = the loader's structural triples plus as
  many ``has_image``/``has_text`` triples sampled uniformly.
* **Recommendation module.** The attention layers over the collaborative KG (user-item edges, KG triples in
  both directions, modal edges), layer concatenation e* = e^(0) || e^(1) || ... || e^(L),
  y(u,i) = e*_u^T e*_i, BPR + L2.
* **Training.** Alternately, a recommendation pass and a KG pass per epoch
  (:class:`recbole_mkg.trainer.MKGATTrainer`).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from torch_geometric.utils import softmax as segment_softmax

from recbole_mkg.data.dataset import MultimodalKGDataset, requested_modalities
from recbole_mkg.model.abstract_recommender import FullGraphKGRecommender
from recbole_mkg.model.edge_aggregation import cached_sorted_edges, edge_weighted_sum, layer_edges, relation_weighted_sum
from recbole_mkg.model.graph_encoder import kg_edges
from recbole_mkg.model.knowledge_aware_recommender.multikg4rec import _check_positive_int

AGGREGATIONS = ("add", "concat")
MODAL_RELATIONS = {"visual": "has_image", "text": "has_text"}


def corrupt_tails(tails, node_type, type_start, type_count):
    """Type-preserving corruption: each tail is replaced by a uniformly drawn *other* node of its type.

    Args:
        tails (Tensor): [B] node ids.
        node_type (Tensor): [N] type id of every node.
        type_start, type_count (Tensor): [T] first node id and number of nodes of each type (contiguous).

    Returns:
        Tensor: [B] negative tails, same type as ``tails``, never equal to them (types with >= 2 nodes).
    """
    t = node_type[tails]
    start, count = type_start[t], type_count[t]
    shift = 1 + (torch.rand(tails.shape, device=tails.device) * (count - 1).clamp(min=0)).long()
    shift = torch.minimum(shift, (count - 1).clamp(min=1))
    return start + (tails - start + shift) % count.clamp(min=1)


class MKGATLayer(nn.Module):
    """One MKGs attention layer (see the module docstring).  x [N, d_in] -> [N, d_out]."""

    def __init__(self, d_in, d_out, d_relation, aggregation, dropout):
        super().__init__()
        self.w1_head = nn.Linear(d_in, d_out, bias=False)
        self.w1_relation = nn.Linear(d_relation, d_out, bias=False)
        self.w1_tail = nn.Linear(d_in, d_out, bias=False)
        self.w2 = nn.Linear(d_out, 1, bias=False)
        self.aggregation = aggregation
        if aggregation == "add":
            self.w3 = nn.Linear(d_in, d_out)
        else:
            self.w4 = nn.Linear(d_in + d_out, d_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, relation_embedding, edges, message_sum="sparse"):
        """x [N, d_in], relation_embedding [R, d_relation], edges: (head, tail, relation) [E] each, or
        :class:`~recbole_mkg.model.edge_aggregation.SortedEdges` (built once by :meth:`MKGAT.sorted_edges`)
        -> [N, d_out].

        ``message_sum``: ``sparse`` (default) splits e_{N_h} = sum pi(h,r,t) (W_1^h e_h + W_1^r e_r + W_1^t e_t)
        into (sum pi = 1 or 0) W_1^h e_h + the relation term summed per (head, relation) + one CSR product for the tails
        (:func:`~recbole_mkg.model.edge_aggregation.edge_weighted_sum`): no [E, d_out] tensor; ``edgewise``
        forms e(h,r,t) per edge and scatters it (the literal equations). The same values up to summation order."""
        n = x.size(0)
        edges, (head, tail, relation) = layer_edges(edges, n, message_sum)
        parts = (self.w1_head(x), self.w1_relation(relation_embedding), self.w1_tail(x))  # [N|R, d_out]
        ids = (head, relation, tail)
        # W_2 e(h,r,t) is linear in the three parts: scored once per node / relation, then gathered per edge
        w2 = self.w2.weight.squeeze(0)
        logits = sum((p @ w2).index_select(0, i) for p, i in zip(parts, ids))  # [E]
        pi = segment_softmax(F.leaky_relu(logits), head, num_nodes=n)
        if message_sum == "sparse":
            head_part, relation_part, tail_part = parts
            weight = pi.unsqueeze(1)  # [E, 1]: one "attention head"
            # sum of pi over h's edges (a softmax): 1, or 0 for a node without edges
            neighbourhood = (edges.has_edges().unsqueeze(1) * head_part
                             + relation_weighted_sum(weight, head, relation, relation_part.unsqueeze(1), n)[:, 0]
                             + edge_weighted_sum(weight, tail_part.unsqueeze(1), edges)[:, 0])
        else:  # index_select, not p[i]: its backward is an index_add, not a sorting index_put (CPU)
            e = sum(p.index_select(0, i) for p, i in zip(parts, ids))  # e(h,r,t) [E, d_out]
            neighbourhood = x.new_zeros(n, e.size(1)).index_add_(0, head, pi.unsqueeze(1) * e)
        if self.aggregation == "add":
            out = self.w3(x) + neighbourhood
        else:
            out = self.w4(torch.cat([x, neighbourhood], dim=1))
        return self.dropout(F.leaky_relu(out))


class MKGAT(FullGraphKGRecommender):
    dataset_class = MultimodalKGDataset

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = _check_positive_int(config, "embedding_size")
        self.layer_sizes = list(config["layers"])
        self.reg_weight = config["reg_weight"]
        self.kg_margin = float(config["kg_margin"])
        if not self.kg_margin > 0:
            raise ValueError(f"config 'kg_margin' must be positive, got {config['kg_margin']!r}")
        aggregation = config["aggregation"]
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"config 'aggregation': {aggregation!r} is not one of {list(AGGREGATIONS)}")
        self.modalities = requested_modalities(config)

        # ---- MKGs entity encoder: ID embeddings, modality-specific projections of the modal nodes ----
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.entity_embedding = nn.Embedding(self.n_entities, self.embedding_size)
        self.projection = nn.ModuleDict()
        self.n_structural = self.n_users + self.n_entities
        type_start, type_count = [self.n_users + 1], [self.n_entities - 1]  # type 0: structural entities
        node_type = [torch.full((self.n_users,), -1), torch.zeros(self.n_entities, dtype=torch.long)]
        modal_head, modal_tail, modal_rel, offset = [], [], [], self.n_structural
        for k, m in enumerate(self.modalities):
            if m not in getattr(dataset, "modal_features", {}):
                raise ValueError(f"dataset has no {m!r} features loaded; MKGAT needs a MultimodalKGDataset")
            owners = torch.nonzero(dataset.modal_masks[m]).flatten()  # entities that have this modality
            self.register_buffer(f"features_{m}", dataset.modal_features[m][owners].clone(), persistent=False)
            self.projection[m] = nn.Linear(dataset.modal_features[m].shape[1], self.embedding_size)
            modal_head.append(owners + self.n_users)
            modal_tail.append(torch.arange(offset, offset + len(owners)))
            modal_rel.append(torch.full((len(owners),), 2 * self.n_relations + k))
            type_start.append(offset)
            type_count.append(len(owners))
            node_type.append(torch.full((len(owners),), k + 1))
            offset += len(owners)
        self.n_nodes = offset
        self.n_edge_relations = 2 * self.n_relations + len(self.modalities)
        self.relation_embedding = nn.Embedding(self.n_edge_relations, self.embedding_size)
        self.register_buffer("node_type", torch.cat(node_type), persistent=False)
        self.register_buffer("type_start", torch.tensor(type_start), persistent=False)
        self.register_buffer("type_count", torch.tensor(type_count), persistent=False)

        # ---- the multi-modal collaborative KG: user-item, KG triples both ways, has_image / has_text ----
        ckg = dataset.ckg_graph(form="coo", value_field="relation_id")
        head, tail, rel = (torch.from_numpy(a.astype(np.int64)) for a in (ckg.row, ckg.col, ckg.data))
        ui = rel == self.n_relations - 1
        kg_head, kg_tail, kg_rel = kg_edges(head[~ui], rel[~ui], tail[~ui], self.n_relations)
        edges = [torch.cat([head[ui], kg_head] + modal_head), torch.cat([tail[ui], kg_tail] + modal_tail),
                 torch.cat([rel[ui], kg_rel] + modal_rel)]
        for name, e in zip(("edge_head", "edge_tail", "edge_relation"), edges):
            self.register_buffer(name, e, persistent=False)
        if modal_head:
            for name, e in zip(("modal_head", "modal_tail", "modal_relation"),
                               (torch.cat(modal_head), torch.cat(modal_tail), torch.cat(modal_rel))):
                self.register_buffer(name, e, persistent=False)

        # ---- MKGs attention layers (recommendation module), TransE relations (KG-embedding module) ----
        dims = [self.embedding_size] + self.layer_sizes
        self.layers = nn.ModuleList(
            MKGATLayer(i, o, self.embedding_size, aggregation, config["mess_dropout"]) for i, o in zip(dims[:-1], dims[1:])
        )
        self.kg_relation_embedding = nn.Embedding(self.n_edge_relations, dims[1])
        self.apply(xavier_normal_initialization)

    # ---- encoder and propagation ----------------------------------------------------------------------
    def node_inputs(self):
        """[n_nodes, d]: users, entities (ID embeddings), then the image and text nodes (projections)."""
        parts = [self.user_embedding.weight, self.entity_embedding.weight]
        parts += [self.projection[m](getattr(self, f"features_{m}")) for m in self.modalities]
        return torch.cat(parts, dim=0)

    def sorted_edges(self):
        """The fixed edge set sorted for the layers' sparse sums, built on first use and again after the model
        moves to another device (not a buffer: derived from ``edge_*``, never saved)."""
        return cached_sorted_edges(self, (self.edge_head, self.edge_tail, self.edge_relation), self.n_nodes)

    def propagate(self, n_layers=None):
        """List [x^(0), ..., x^(L)] of node representations."""
        edges = self.sorted_edges()
        xs = [self.node_inputs()]
        for layer in self.layers[:n_layers]:
            xs.append(layer(xs[-1], self.relation_embedding.weight, edges))
        return xs

    def forward(self):
        """User [n_users, D] and entity [n_entities, D] representations, D = d + sum(layers)."""
        xs = self.propagate()
        out = torch.cat([xs[0]] + [F.normalize(x, p=2, dim=1) for x in xs[1:]], dim=1)
        return out[: self.n_users], out[self.n_users: self.n_structural]

    # ---- recommendation module --------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        self.invalidate_cache()
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        user_all, entity_all = self.forward()
        u, pos, neg = user_all[user], entity_all[pos_item], entity_all[neg_item]
        mf_loss = self.mf_loss((u * pos).sum(dim=1), (u * neg).sum(dim=1))
        reg = self.reg_loss(self.user_embedding(user), self.entity_embedding(pos_item), self.entity_embedding(neg_item))
        return mf_loss + self.reg_weight * reg

    # ---- KG embedding module ------------------------------------------------------------------------------
    def kg_triples(self, interaction):
        """The KG batch in node ids: the loader's structural triples + as many sampled modal triples.
        Returns (head, relation, tail) [B'] each."""
        h = interaction[self.HEAD_ENTITY_ID] + self.n_users
        r = interaction[self.RELATION_ID]
        t = interaction[self.TAIL_ENTITY_ID] + self.n_users
        if self.modalities:
            pick = torch.randint(0, self.modal_head.numel(), (h.numel(),), device=h.device)
            h = torch.cat([h, self.modal_head[pick]])
            r = torch.cat([r, self.modal_relation[pick]])
            t = torch.cat([t, self.modal_tail[pick]])
        return h, r, t

    def calculate_kg_loss(self, interaction):
        """TransE margin loss with type-preserving negative tails."""
        self.invalidate_cache()
        h, r, t = self.kg_triples(interaction)
        neg_t = corrupt_tails(t, self.node_type, self.type_start, self.type_count)
        x = F.normalize(self.propagate(n_layers=1)[1], p=2, dim=1)
        rel = self.kg_relation_embedding(r)
        pos_d = (x[h] + rel - x[t]).norm(p=2, dim=1)
        neg_d = (x[h] + rel - x[neg_t]).norm(p=2, dim=1)
        return F.relu(self.kg_margin + pos_d - neg_d).mean() + self.reg_weight * self.reg_loss(rel)
