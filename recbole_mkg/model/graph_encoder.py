r"""The multimodal-KG encoder of CrossGMMI-DUKGLR: cross-modal fusion + relation-aware GAT with Jumping
Knowledge. Also used by the entity-alignment pre-training (:mod:`recbole_mkg.model.alignment`).

* :class:`ModalFusion` - per-entity text and visual features, each projected into ``n_tokens`` pseudo-tokens
  of size d; multi-head cross-attention where **text queries attend to visual keys/values**,
  H^t = LayerNorm(T + MHA(T, V, V)), mean-pooled over tokens (``text_to_visual``); ``bidirectional`` adds the
  symmetric H^v = LayerNorm(V + MHA(V, T, T)) and averages both sides; ``concat`` is the ablation
  W_c [x^t || x^v]. Presence masks: an entity without a modality contributes nothing from it, and an entity
  without any modality gets an all-zero fused vector (its ID embedding alone, never an invented vector).
* :class:`RelationalGATLayer` - relation-aware graph attention over (head, relation, tail) edges:
  m_{hrt} = W z_t + W_r e_r, e_{hrt} = LeakyReLU(a_d^T W z_h + a_m^T m_{hrt}) per attention head,
  alpha = segment softmax over each head node's edges (``torch_geometric.utils.softmax``),
  z_h^{l+1} = ELU(sum_t alpha_{hrt} m_{hrt}) + z_h^l (the paper's "+ Jump(h_i^l)" residual). The weighted sum
  runs as one CSR product per attention head over the edge set sorted once (:class:`SortedEdges`), with an
  SDDMM for the weights' gradient: no [E, heads, d_head] tensor.
* :class:`RelationalGAT` - L such layers (default 2 hops) combined by PyG's ``JumpingKnowledge``
  (``cat`` / ``max`` / ``lstm``) or ``last`` (no JK, the ablation).
* :func:`kg_edges` - triples plus inverse edges (relation id + n_relations), so messages flow both ways.
* :func:`drop_edges`, :func:`mask_features` - the graph augmentations (edge dropout, feature masking).

Every operation is vectorised over edges and entities; nothing loops over nodes or edges.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import JumpingKnowledge
from torch_geometric.utils import softmax as segment_softmax

from recbole_mkg.model.edge_aggregation import (SortedEdges, edge_weighted_sum, layer_edges, relation_table_is_small,
                                                relation_weighted_sum)

FUSION_MODES = ("text_to_visual", "bidirectional", "concat")
JK_MODES = ("cat", "max", "lstm", "last")


def kg_edges(head, relation, tail, n_relations, inverse=True):
    """(head, tail, relation) long tensors of a triple set, plus inverse edges (t, r + n_relations, h).

    Messages flow tail -> head (the convention of :mod:`recbole_mkg.model.layers`); the inverse edges let
    attribute entities receive messages from the items that point at them."""
    head, relation, tail = (torch.as_tensor(x, dtype=torch.long) for x in (head, relation, tail))
    if not inverse:
        return head, tail, relation
    return torch.cat([head, tail]), torch.cat([tail, head]), torch.cat([relation, relation + n_relations])


def drop_edges(edges, p, generator=None):
    """Edge dropout: keep each edge with probability 1 - p.  (head, tail, relation) -> same, fewer edges;
    :class:`SortedEdges` -> its :meth:`~SortedEdges.subset` (still sorted, no new sort). Both draw the same
    mask over the input edge list, so a seed drops the same edges either way."""
    if p <= 0:
        return edges
    if isinstance(edges, SortedEdges):
        return edges.subset(torch.rand(len(edges), device=edges.head.device, generator=generator) >= p)
    kept = (torch.rand(edges[0].shape, device=edges[0].device, generator=generator) >= p).nonzero().squeeze(1)
    return tuple(e.index_select(0, kept) for e in edges)  # one nonzero for the three (a mask index runs one each)


def mask_features(features, p, generator=None):
    """Feature masking: zero each feature dimension of each row with probability p (no rescaling)."""
    if p <= 0:
        return features
    keep = torch.rand(features.shape, device=features.device, generator=generator) >= p
    return features * keep


class ModalFusion(nn.Module):
    """Text/visual feature vectors -> one fused vector per entity.

    Args:
        modal_dims (dict): modality -> raw feature dimension (``visual``/``text``, any subset).
        dim (int): output size d.
        mode (str): ``text_to_visual`` | ``bidirectional`` | ``concat``.
        n_tokens (int): pseudo-tokens per modality (a pooled CLIP/BERT vector is projected to n_tokens x d, so
            the attention has several keys to weigh; with one key the softmax would be constant).
        n_heads (int): attention heads (must divide d).
    """

    def __init__(self, modal_dims, dim, mode="text_to_visual", n_tokens=4, n_heads=4, dropout=0.0):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"config 'fusion': {mode!r} is not one of {list(FUSION_MODES)}")
        if dim % n_heads:
            raise ValueError(f"config 'n_heads' ({n_heads}) must divide 'embedding_size' ({dim})")
        self.modalities = [m for m in ("visual", "text") if m in modal_dims]
        self.dim, self.mode = dim, mode
        self.cross = mode != "concat" and len(self.modalities) == 2
        self.n_tokens = n_tokens if self.cross else 1
        self.projection = nn.ModuleDict(
            {m: nn.Linear(modal_dims[m], self.n_tokens * dim) for m in self.modalities}
        )
        if self.cross:
            queries = ["text", "visual"] if mode == "bidirectional" else ["text"]
            self.attention = nn.ModuleDict(
                {q: nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True) for q in queries}
            )
            self.norm = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})
        elif mode == "concat" and len(self.modalities) == 2:
            self.combine = nn.Linear(2 * dim, dim)

    def tokens(self, modality, features):
        """[n, D_m] -> [n, n_tokens, d]."""
        return self.projection[modality](features).view(features.size(0), self.n_tokens, self.dim)

    def forward(self, features, masks):
        """features: modality -> [n, D_m]; masks: modality -> [n] bool.  Returns [n, d] (zero rows where an
        entity has none of the modalities)."""
        present = {m: masks[m].unsqueeze(1).to(features[m].dtype) for m in self.modalities}
        any_present = torch.stack([masks[m] for m in self.modalities]).any(0).unsqueeze(1)
        if len(self.modalities) == 1:
            m = self.modalities[0]
            return self.tokens(m, features[m]).mean(1) * present[m]
        if not self.cross:  # concat ablation: W_c [x^t || x^v], a missing modality enters as zeros
            x = torch.cat([self.tokens(m, features[m]).squeeze(1) * present[m] for m in ("text", "visual")], 1)
            return self.combine(x) * any_present
        tok = {m: self.tokens(m, features[m]) * present[m].unsqueeze(2) for m in self.modalities}
        other = {"text": "visual", "visual": "text"}
        side = {}
        for m in self.modalities:  # (at most two modalities)
            if m in self.attention:  # queries of m attend to the other modality's keys/values
                o = other[m]
                attended, _ = self.attention[m](tok[m], tok[o], tok[o], need_weights=False)
                side[m] = self.norm[m](tok[m] + attended * present[o].unsqueeze(2)).mean(1)
            else:
                side[m] = self.norm[m](tok[m]).mean(1)
        if self.mode == "bidirectional":  # average of the sides the entity has
            total = side["text"] * present["text"] + side["visual"] * present["visual"]
            fused = total / (present["text"] + present["visual"]).clamp(min=1)
        else:  # text side (which saw the image); visual tokens alone only when there is no text
            fused = torch.where(masks["text"].unsqueeze(1), side["text"], side["visual"] * present["visual"])
        return fused * any_present


class RelationalGATLayer(nn.Module):
    """One relation-aware GAT hop (see the module docstring).  x [N, d] -> [N, d]."""

    def __init__(self, dim, n_heads=2, dropout=0.0, negative_slope=0.2):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"config 'gat_heads' ({n_heads}) must divide 'embedding_size' ({dim})")
        self.n_heads, self.d_head = n_heads, dim // n_heads
        self.lin = nn.Linear(dim, dim, bias=False)
        self.lin_relation = nn.Linear(dim, dim, bias=False)
        self.att_head = nn.Parameter(torch.empty(1, n_heads, self.d_head))
        self.att_message = nn.Parameter(torch.empty(1, n_heads, self.d_head))
        nn.init.xavier_uniform_(self.att_head)
        nn.init.xavier_uniform_(self.att_message)
        self.negative_slope = negative_slope
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, relation_embedding, edges, message_sum="sparse", group_relations=None):
        """x [N, d], relation_embedding [R, d], edges: (head, tail, relation) [E] each, or :class:`SortedEdges`
        (built once and shared by the layers of :class:`RelationalGAT`) -> [N, d].

        ``message_sum``: ``sparse`` (default) sums sum_t alpha_hrt W z_t as one CSR product per attention head,
        with an SDDMM for the weights' gradient (:class:`_EdgeWeightedSum`); ``edgewise`` forms the
        [E, H, d_head] weighted messages and scatters them (the literal equations; the reference of the tests).
        The same values up to the order of summation. One layer's forward + backward at ml-1m-kg's size:
        ``benchmarks/bench_gat_layer.py`` (docs/benchmarks.md).

        ``group_relations``: sum the messages' relation term W_r e_r per (head, relation) instead of edge by
        edge. None (default) groups when the [N * R, H] table of summed weights is no larger than the
        [E, H, d_head] messages, i.e. on KGs with few relations (ml-1m-kg's 1.5M edges carry 24 relation ids,
        inverses included)."""
        n = x.size(0)
        edges, (head, tail, relation) = layer_edges(edges, n, message_sum)
        z = self.lin(x).view(n, self.n_heads, self.d_head)
        rel = self.lin_relation(relation_embedding).view(-1, self.n_heads, self.d_head)
        # e_hrt = a_d^T W z_h + a_m^T (W z_t + W_r e_r): each term is scored once per node / relation [., H]
        # and gathered per edge (as PyG's GATConv does), never as [E, H, d_head] products
        logits = (self._score(z, self.att_head).index_select(0, head)
                  + self._score(z, self.att_message).index_select(0, tail)
                  + self._score(rel, self.att_message).index_select(0, relation))  # [E, H]
        alpha = segment_softmax(F.leaky_relu(logits, self.negative_slope), head, num_nodes=n)
        if group_relations is None:
            group_relations = relation_table_is_small(n, rel.size(0), alpha.size(0), self.d_head)
        # index_select, not z[tail]: its backward is an index_add, not a sorting index_put (CPU)
        if message_sum == "sparse":
            out = edge_weighted_sum(alpha, z, edges)  # sum_t alpha_hrt W z_t
        elif group_relations:
            out = torch.zeros_like(z).index_add_(0, head, alpha.unsqueeze(-1) * z.index_select(0, tail))
        else:  # the literal equations: m_hrt = W z_t + W_r e_r [E, H, d_head], weighted and scattered
            message = z.index_select(0, tail) + rel.index_select(0, relation)
            out = torch.zeros_like(z).index_add_(0, head, alpha.unsqueeze(-1) * message)
        if group_relations or message_sum == "sparse":
            out = out + relation_weighted_sum(alpha, head, relation, rel, n, group_relations)  # sum_t alpha_hrt W_r e_r
        return self.dropout(F.elu(out.view(n, -1))) + x

    @staticmethod
    def _score(x, attention):
        """[m, H, d_head] x [1, H, d_head] -> [m, H]: a^T x per head."""
        return (x * attention).sum(-1)


class RelationalGAT(nn.Module):
    """``n_layers`` relation-aware GAT hops + Jumping Knowledge over [x^(0), ..., x^(L)].

    Output size: (L + 1) d for ``cat``, d otherwise."""

    def __init__(self, dim, n_layers=2, n_heads=2, jk_mode="cat", dropout=0.0):
        super().__init__()
        if jk_mode not in JK_MODES:
            raise ValueError(f"config 'jk_mode': {jk_mode!r} is not one of {list(JK_MODES)}")
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"config 'gat_layers' must be a positive integer, got {n_layers!r}")
        self.layers = nn.ModuleList(RelationalGATLayer(dim, n_heads, dropout) for _ in range(n_layers))
        self.jk_mode = jk_mode
        self.jk = None if jk_mode == "last" else JumpingKnowledge(jk_mode, channels=dim, num_layers=n_layers + 1)
        self.output_dim = dim * (n_layers + 1) if jk_mode == "cat" else dim

    def forward(self, x, relation_embedding, edges):
        """x [N, d], relation_embedding [R, d], edges (head, tail, relation) [E] each or :class:`SortedEdges`
        -> [N, output_dim]."""
        if not isinstance(edges, SortedEdges):
            edges = SortedEdges(edges, x.size(0))  # once for every layer and their backward
        xs = [x]
        for layer in self.layers:
            xs.append(layer(xs[-1], relation_embedding, edges))
        return xs[-1] if self.jk is None else self.jk(xs)


class MKGEncoder(nn.Module):
    """Fusion + relation-aware GAT with JK: the shared encoder of CrossGMMI (pre-training and fine-tuning).

    ``node_inputs`` turns ID embeddings and modal features into node inputs x = e_id + fused(features)
    (fused is 0 for entities without any modality); ``forward`` propagates them over an edge set."""

    def __init__(self, modal_dims, dim, fusion="text_to_visual", n_tokens=4, n_heads=4, gat_layers=2, gat_heads=2,
                 jk_mode="cat", dropout=0.0):
        super().__init__()
        self.modalities = [m for m in ("visual", "text") if m in modal_dims]
        self.fusion = ModalFusion(modal_dims, dim, fusion, n_tokens, n_heads) if self.modalities else None
        self.gat = RelationalGAT(dim, gat_layers, gat_heads, jk_mode, dropout)
        self.output_dim = self.gat.output_dim

    def node_inputs(self, id_embedding, features, masks, feature_mask=0.0, rows=None):
        """id_embedding [n, d]; features modality -> [n, D_m]; masks modality -> [n] bool.  -> [n, d].

        Fusion runs on the ``rows`` [n_f] with at least one modality alone (:meth:`modal_rows`; pass them
        precomputed, the masks being fixed, to spare a device sync): the other entities' fused vector is 0,
        so they keep their ID embedding, exactly, without being fused (ml-100k-kg: 8,311 of 34,629)."""
        if self.fusion is None:
            return id_embedding
        if rows is None:
            rows = self.modal_rows(masks)
        features = {m: mask_features(features[m].index_select(0, rows), feature_mask) for m in self.modalities}
        masks = {m: masks[m].index_select(0, rows) for m in self.modalities}
        return id_embedding.index_add(0, rows, self.fusion(features, masks))

    def modal_rows(self, masks):
        """masks modality -> [n] bool  ->  [n_f] long: the entities with at least one of the encoder's modalities."""
        return torch.stack([masks[m] for m in self.modalities]).any(0).nonzero().squeeze(1)

    def forward(self, x, relation_embedding, edges, edge_drop=0.0):
        """x [N, d], relation_embedding [R, d], edges (head, tail, relation) or :class:`SortedEdges` (pass the
        owner's :func:`cached_sorted_edges`: no sort per call), edge dropout rate -> [N, output_dim]."""
        return self.gat(x, relation_embedding, drop_edges(edges, edge_drop))
