r"""KGAT without DGL: the plugin's port of RecBole's KGAT, registered under the same name ``KGAT``.

Reference:
    Xiang Wang et al. "KGAT: Knowledge Graph Attention Network for Recommendation." in SIGKDD 2019.

Same maths as ``recbole.model.knowledge_aware_recommender.kgat``: relation-wise row-normalised initial adjacency sum_r D_r^-1 A_r, attentive
update pi(h,r,t) = (W_r e_t)^T tanh(W_r e_h + e_r) with a softmax over each head's triples after every
epoch, Bi-Interaction (or GCN / GraphSAGE) aggregation, layer concatenation, BPR + TransR. What differs:
the graph is built from RecBole's COO CKG instead of DGL, and the attention's segment softmax runs on the
model's device (``torch_geometric.utils.softmax``) instead of a CPU ``torch.sparse.softmax``, and the
attention is a buffer, so a checkpoint restores the adjacency it was evaluated with.
Trained by RecBole's ``KGATTrainer`` (CF pass, KG pass, attention update per epoch).

``propagation_graph: interactions`` (beyond the paper) propagates over the user-item edges alone with
LightGCN's fixed symmetric normalisation; the KG then enters through the TransR loss only, as in CKE.
"""
import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization

from recbole_mkg.model.abstract_recommender import FullGraphKGRecommender
from recbole_mkg.model.layers import (
    CollaborativeKG,
    KnowledgePropagation,
    knowledge_aware_attention,
    propagation_graph,
)
from recbole_mkg.model.neighbour_sampling import check_sample_sizes, sample_hops


class KGAT(FullGraphKGRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.kg_embedding_size = config["kg_embedding_size"]

        self.ckg = CollaborativeKG(dataset)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.entity_embedding = nn.Embedding(self.n_entities, self.embedding_size)
        self.relation_embedding = nn.Embedding(self.n_relations, self.kg_embedding_size)
        self.trans_w = nn.Embedding(self.n_relations, self.embedding_size * self.kg_embedding_size)
        self.propagation = KnowledgePropagation(
            self.embedding_size, config["layers"], config["mess_dropout"], config["aggregator_type"]
        )
        self.neighbour_sample_sizes = check_sample_sizes(config["neighbour_sample_sizes"], len(config["layers"]))
        self.propagation_graph = propagation_graph(config, self.neighbour_sample_sizes)
        self.apply(xavier_normal_initialization)
        self.register_buffer("attention", self.ckg.initial_weight(self.propagation_graph))
        self._adjacency = None

    # ---- graph -----------------------------------------------------------------------------------
    @property
    def A_in(self):
        """Current attentive adjacency [n_users + n_entities]^2 (sparse), rebuilt when attention changes."""
        if self._adjacency is None or self._adjacency.device != self.attention.device:
            self._adjacency = self.ckg.adjacency(self.attention, self.propagation_graph)
        return self._adjacency

    def _get_ego_embeddings(self):
        return torch.cat([self.user_embedding.weight, self.entity_embedding.weight], dim=0)

    def _trans_w(self):
        return self.trans_w.weight.view(self.n_relations, self.embedding_size, self.kg_embedding_size)

    @torch.no_grad()
    def update_attentive_A(self):
        """Recompute pi(h,r,t) for every CKG edge (KGAT Eq. 4-5) and the adjacency built from it
        (``propagation_graph: interactions``: fixed weights, nothing to update)."""
        if self.propagation_graph == "interactions":
            return
        self.attention = knowledge_aware_attention(
            self.ckg, self._get_ego_embeddings(), self.relation_embedding.weight, self._trans_w()
        )
        self._adjacency = None

    def load_state_dict(self, state_dict, strict=True):
        result = super().load_state_dict(state_dict, strict)
        self._adjacency = None
        return result

    # ---- forward / losses (BPR, predict, full_sort_predict: FullGraphKGRecommender) ----------------
    def forward(self):
        """Returns user [n_users, D] and entity [n_entities, D] representations, D = d + sum(layers)."""
        all_embeddings = self.propagation(self.A_in, self._get_ego_embeddings())
        return torch.split(all_embeddings, [self.n_users, self.n_entities])

    def forward_sampled(self, targets):
        """Representations [T, D] of ``targets`` [T] from their sampled receptive field."""
        hops = sample_hops(self.A_in, targets, self.neighbour_sample_sizes)
        return self.propagation(hops.blocks(self.A_in.csr.values()), self.node_rows(hops.nodes, self.entity_embedding))

    def calculate_kg_loss(self, interaction):
        """TransR loss (KGAT Eq. 1-2): softplus(g(h,r,t) - g(h,r,t'))."""
        h, r, pos_t, neg_t = self.kg_batch(interaction)
        return transr_loss(self.entity_embedding, self.relation_embedding, self._trans_w(), h, r, pos_t, neg_t,
                           self.reg_loss, self.reg_weight)


def transr_loss(entity_lookup, relation_embedding, trans_w, h, r, pos_t, neg_t, reg_loss, reg_weight):
    """TransR pairwise loss. ``entity_lookup``: callable ids -> [B, d]; ``trans_w`` [R, d, k]."""
    w = trans_w[r]  # [B, d, k]
    h_e = torch.bmm(entity_lookup(h).unsqueeze(1), w).squeeze(1)
    pos_e = torch.bmm(entity_lookup(pos_t).unsqueeze(1), w).squeeze(1)
    neg_e = torch.bmm(entity_lookup(neg_t).unsqueeze(1), w).squeeze(1)
    r_e = relation_embedding(r)
    pos_score = ((h_e + r_e - pos_e) ** 2).sum(dim=1)
    neg_score = ((h_e + r_e - neg_e) ** 2).sum(dim=1)
    kg_loss = nn.functional.softplus(pos_score - neg_score).mean()
    return kg_loss + reg_weight * reg_loss(h_e, r_e, pos_e, neg_e)
