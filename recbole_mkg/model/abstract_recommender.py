"""Base class of the plugin's full-graph knowledge-aware recommenders."""
from collections import OrderedDict

import torch
from recbole.model.abstract_recommender import KnowledgeRecommender
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType


class FullGraphKGRecommender(KnowledgeRecommender):
    """A model whose ``forward()`` propagates over the whole graph and returns user [n_users, D] and
    entity [n_entities, D] representations (items are entities ``0..n_items-1``); scores are inner
    products. Provides BPR + L2 training, per-pair ``predict`` and a cached ``full_sort_predict``
    (the cache is dropped whenever a loss is computed, i.e. whenever parameters may change).

    A subclass that sets ``self.neighbour_sample_sizes`` (a list instead of None, see
    :mod:`recbole_mkg.model.neighbour_sampling`) and implements :meth:`forward_sampled` trains on each
    batch's sampled receptive field instead of the whole graph; evaluation stays full-graph."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.reg_weight = config["reg_weight"]
        self.mf_loss = BPRLoss()
        self.reg_loss = EmbLoss()
        self.restore_user_e = None
        self.restore_entity_e = None
        #: None = full-graph training; a subclass with :meth:`forward_sampled` may set a list of sizes
        self.neighbour_sample_sizes = None
        self.other_parameter_name = ["restore_user_e", "restore_entity_e"]

    def forward(self):
        raise NotImplementedError

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """As :meth:`torch.nn.Module.load_state_dict`, ignoring the entries of *derived* buffers: what a
        model builds from its dataset at construction (graph edges, feature tables, BFS sequences) is not
        persistent, so checkpoints carry parameters and learned state only; checkpoints written before
        2026-12-05 still carry those tables, and they load as before (the rebuilt ones are the same)."""
        derived = set(dict(self.named_buffers())) - set(self.state_dict(keep_vars=True))
        kept = OrderedDict((k, v) for k, v in state_dict.items() if k not in derived)
        if hasattr(state_dict, "_metadata"):
            kept._metadata = state_dict._metadata
        return super().load_state_dict(kept, strict=strict, assign=assign)

    def invalidate_cache(self):
        self.restore_user_e = self.restore_entity_e = None

    def kg_batch(self, interaction):
        """``(h, r, t, t')`` of a KG batch, and the full-sort cache dropped."""
        self.invalidate_cache()
        return (interaction[self.HEAD_ENTITY_ID], interaction[self.RELATION_ID],
                interaction[self.TAIL_ENTITY_ID], interaction[self.NEG_TAIL_ENTITY_ID])

    def node_rows(self, nodes, entity_lookup):
        """Rows [n, d] of global CKG nodes ``nodes`` [n]: ``user_embedding`` for users (ids < n_users),
        ``entity_lookup(entity ids)`` for entities (ids ``n_users + e``)."""
        is_user = (nodes < self.n_users).unsqueeze(1)
        return torch.where(is_user, self.user_embedding(nodes.clamp(max=self.n_users - 1)),
                           entity_lookup((nodes - self.n_users).clamp(min=0)))

    def forward_sampled(self, targets):
        """Representations [T, D] of the global CKG nodes ``targets`` [T] (users ``u``, entities
        ``n_users + e``) from their sampled receptive field; see ``neighbour_sample_sizes``."""
        raise NotImplementedError(f"{type(self).__name__} has no mini-batched propagation")

    def calculate_loss(self, interaction):
        """BPR loss -ln sigma(y_ui - y_uj) + reg_weight * L2 of the batch's representations.

        Full graph (the papers), or with ``neighbour_sample_sizes`` the batch's sampled receptive field."""
        self.invalidate_cache()
        users, pos_items, neg_items = (interaction[self.USER_ID], interaction[self.ITEM_ID],
                                       interaction[self.NEG_ITEM_ID])
        if self.neighbour_sample_sizes is not None and self.training:
            nodes = torch.cat([users, self.n_users + pos_items, self.n_users + neg_items])
            targets, inverse = torch.unique(nodes, return_inverse=True)
            u, pos, neg = self.forward_sampled(targets)[inverse].split(len(users))
        else:
            user_all, entity_all = self.forward()
            u, pos, neg = user_all[users], entity_all[pos_items], entity_all[neg_items]
        mf_loss = self.mf_loss((u * pos).sum(dim=1), (u * neg).sum(dim=1))
        return mf_loss + self.reg_weight * self.reg_loss(u, pos, neg)

    def predict(self, interaction):
        user_all, entity_all = self.forward()
        return (user_all[interaction[self.USER_ID]] * entity_all[interaction[self.ITEM_ID]]).sum(dim=1)

    def full_sort_predict(self, interaction):
        if self.restore_user_e is None or self.restore_entity_e is None:
            with torch.no_grad():
                self.restore_user_e, self.restore_entity_e = self.forward()
        u = self.restore_user_e[interaction[self.USER_ID]]
        return (u @ self.restore_entity_e[: self.n_items].T).view(-1)
