"""Layers shared by the plugin's models.

* :class:`CollaborativeKG` - the collaborative knowledge graph (users + entities) as device tensors,
  with KGAT's relation-wise normalised initial adjacency (Wang et al., KDD 2019, Eq. 4 init), or
  LightGCN's symmetric normalisation of its user-item edges alone (an option beyond the papers).
* :func:`knowledge_aware_attention` - pi(h, r, t) = (W_r e_t)^T tanh(W_r e_h + e_r), normalised by a
  segment softmax over each head's triples (KGAT Eq. 4-5; Multi-KG4Rec Eq. 8), on the device.
* :class:`Aggregator` - KGAT's GCN / GraphSAGE / Bi-Interaction aggregators (Multi-KG4Rec Eq. 9).
* :class:`KnowledgePropagation` - L aggregation layers with layer concatenation (Multi-KG4Rec Eq. 10).
* :class:`CrossModalTransformer` - text and visual transformer blocks whose queries attend to the
  concatenated keys/values of both modalities (Multi-KG4Rec Eq. 4-7).
"""
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.utils import softmax as segment_softmax


#: ``propagation_graph`` values: the collaborative KG (the papers) or its user-item edges alone (beyond them)
PROPAGATION_GRAPHS = ("ckg", "interactions")


class CollaborativeKG(nn.Module):
    """The CKG of RecBole's ``KnowledgeBasedDataset.ckg_graph``: node ``u`` for users, ``n_users + e`` for
    entities; edges user->item and item->user carry the ``[UI-Relation]`` id, KG triples their relation.

    Buffers (move with ``.to(device)``): ``head``, ``tail``, ``relation`` [E] long, sorted by relation then
    head, and ``init_weight`` [E] float, KGAT's initial adjacency values sum_r D_r^-1 A_r.
    """

    def __init__(self, dataset):
        super().__init__()
        ckg = dataset.ckg_graph(form="coo", value_field="relation_id")
        self.n_nodes = int(ckg.shape[0])
        self.ui_relation = int(dataset.relation_num) - 1  # RecBole's [UI-Relation] id is the last one
        head = ckg.row.astype(np.int64)
        tail = ckg.col.astype(np.int64)
        rel = ckg.data.astype(np.int64)
        n_rel = int(rel.max()) + 1 if len(rel) else 1
        order = _edge_order(rel, head, tail, n_rel, self.n_nodes)
        head, tail, rel = head[order], tail[order], rel[order]
        del order
        # KGAT init: per relation, row-normalise A_r (1 / out-degree of h within r), then sum over r.
        # Edges are sorted by (relation, head), so each (h, r) group is one run: its length is the count.
        starts = np.flatnonzero(np.r_[True, (rel[1:] != rel[:-1]) | (head[1:] != head[:-1])])
        counts = np.diff(np.r_[starts, len(rel)])
        init = np.repeat(1.0 / counts, counts)
        # Not persistent (as every buffer built from the dataset): rebuilt at construction, so checkpoints
        # carry parameters and learned state only (on ml-1m-kg these four were 43 MB of a 107 MB file).
        self.register_buffer("head", torch.from_numpy(head), persistent=False)
        self.register_buffer("tail", torch.from_numpy(tail), persistent=False)
        self.register_buffer("relation", torch.from_numpy(rel), persistent=False)
        self.register_buffer("init_weight", torch.from_numpy(init.astype(np.float32)), persistent=False)
        # contiguous slices of each relation, for the per-relation projections of the attention
        bounds = np.searchsorted(rel, np.arange(n_rel + 1))
        self.relation_slices = [(r, int(bounds[r]), int(bounds[r + 1])) for r in range(n_rel) if bounds[r + 1] > bounds[r]]
        # the sparsity pattern of A and of A^T, computed once: every attention update then only scatters
        # the new values into their CSR slots (O(E)), instead of coalescing and sorting E edges twice.
        # Not persistent: derived from head/tail, so checkpoints neither grow nor change.
        for name, (rows, cols) in {"a": (head, tail), "a_t": (tail, head)}.items():
            crow, col, slot = _csr_pattern(rows, cols, self.n_nodes)
            self.register_buffer(f"{name}_crow", torch.from_numpy(crow), persistent=False)
            self.register_buffer(f"{name}_col", torch.from_numpy(col), persistent=False)
            self.register_buffer(f"{name}_slot", torch.from_numpy(slot), persistent=False)

    @property
    def num_edges(self):
        return int(self.head.numel())

    def interaction_weight(self):
        """[E] LightGCN's symmetric normalisation 1 / sqrt(|N_u| |N_i|) on the user-item edges and 0 on the
        KG triples: propagation over the interaction graph alone (``propagation_graph: interactions``)."""
        ui = self.relation == self.ui_relation
        degree = torch.bincount(self.head[ui], minlength=self.n_nodes).float()  # UI edges go both ways
        weight = (degree[self.head] * degree[self.tail]).clamp(min=1).rsqrt()
        return torch.where(ui, weight, torch.zeros_like(weight))

    def initial_weight(self, graph):
        """[E] starting adjacency values for ``propagation_graph`` ``graph``: ``ckg`` (the papers: KGAT's
        sum_r D_r^-1 A_r, then attention after every epoch) or ``interactions`` (fixed, see
        :meth:`interaction_weight`)."""
        if graph == "ckg":
            return self.init_weight.clone()
        if graph == "interactions":
            return self.interaction_weight()
        raise ValueError(f"config 'propagation_graph': {graph!r} is not one of {list(PROPAGATION_GRAPHS)}")

    def adjacency(self, values, graph="ckg"):
        """:class:`PropagationMatrix` [n_nodes, n_nodes] with A[h, t] = values [E] (edge order; the values of
        parallel edges, one (h, t) pair under several relations, are summed as ``coalesce`` would), on the
        values' device. O(E): the CSR patterns of A and A^T are fixed at construction.

        ``graph="interactions"``: the matrix of the user-item edges alone (their ``values``), so that no
        propagation visits the KG triples, which weigh 0 on that graph: O(E log E), for a graph built once."""
        values = values.detach()
        shape = (self.n_nodes, self.n_nodes)
        if graph == "interactions":
            ui = self.relation == self.ui_relation
            with warnings.catch_warnings():  # "sparse invariant checks are implicitly disabled"
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(torch.stack([self.head[ui], self.tail[ui]]), values[ui], shape)
            return PropagationMatrix(coo)

        def csr(name):
            col = getattr(self, f"{name}_col")
            slotted = values.new_zeros(col.numel()).index_add_(0, getattr(self, f"{name}_slot"), values)
            return torch.sparse_csr_tensor(getattr(self, f"{name}_crow"), col, slotted, shape)

        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return PropagationMatrix.from_csr(csr("a"), csr("a_t"))


def propagation_graph(config, neighbour_sample_sizes=None):
    """The model's ``propagation_graph`` config value (``ckg`` when unset; the value itself is checked by
    :meth:`CollaborativeKG.initial_weight`), with the options it excludes."""
    graph = config["propagation_graph"] or "ckg"
    if graph == "interactions" and neighbour_sample_sizes is not None:
        # the sampler draws from every CKG edge, and KG triples carry weight 0 on this graph
        raise ValueError("config 'propagation_graph: interactions' and 'neighbour_sample_sizes' exclude each "
                         "other: set neighbour_sample_sizes: ~ (full-graph propagation)")
    return graph


def _csr_pattern(rows, cols, n_nodes):
    """CSR pattern of the [n, n] matrix with entries at (rows[e], cols[e]) [E], parallel entries merged.

    Returns ``crow`` [n + 1], ``col`` [nnz] (int64, columns sorted within each row, as ``coalesce`` orders
    them) and ``slot`` [E] (int64): the CSR position of every entry, so that the values of a new matrix with
    this pattern are ``zeros(nnz).index_add_(0, slot, values)``."""
    key = rows * n_nodes + cols  # < n^2: fits int64 for any graph that fits in memory
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    del key
    first = np.empty(len(sorted_key), dtype=bool)
    first[:1] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=first[1:])
    slot = np.empty(len(order), dtype=np.int64)
    slot[order] = np.cumsum(first) - 1
    del order
    unique = sorted_key[first]
    crow = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(unique // n_nodes, minlength=n_nodes), out=crow[1:])
    return crow, unique % n_nodes, slot


def _edge_order(rel, head, tail, n_rel, n_nodes):
    """Permutation sorting edges by (relation, head, tail): one argsort of a combined int64 key where it
    fits (several times faster than a 3-key lexsort at 4e7 edges), else ``np.lexsort``."""
    if n_rel * n_nodes * n_nodes < 2**63:
        return np.argsort((rel * n_nodes + head) * n_nodes + tail, kind="stable")
    return np.lexsort((tail, head, rel))


class _FixedSparseMatmul(torch.autograd.Function):
    """y = A x for a constant sparse A; the backward uses the stored CSR of A^T (no transposition per step)."""

    @staticmethod
    def forward(ctx, matrix, matrix_t, x):
        ctx.matrix_t = matrix_t
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.matrix_t @ grad


class PropagationMatrix:
    """A constant (no-gradient) sparse propagation matrix A [n, n], e.g. the attentive CKG adjacency,
    kept in CSR form together with the CSR of its transpose, built once per attention update.

    ``A @ x`` ([n, d] dense, with gradient to x) then costs one CSR product forward and one backward:
    measured on 2 CPU cores with ml-1m's 1.5M edges and d = 64, 0.02 s per forward + backward against
    0.17 s for ``torch.sparse.mm`` on a COO matrix (which transposes and converts in every backward)."""

    def __init__(self, coo):
        coo = coo.coalesce()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we measured and test
            warnings.simplefilter("ignore", UserWarning)
            self._set(coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr())

    @classmethod
    def from_csr(cls, csr, csr_t):
        """From a CSR matrix A and the CSR of its transpose (the caller guarantees csr_t = A^T)."""
        matrix = cls.__new__(cls)
        matrix._set(csr, csr_t)
        return matrix

    def _set(self, csr, csr_t):
        self.csr, self.csr_t, self.shape = csr, csr_t, tuple(csr.shape)

    @property
    def device(self):
        return self.csr.device

    def __matmul__(self, x):
        return _FixedSparseMatmul.apply(self.csr, self.csr_t, x)

    def to_dense(self):
        return self.csr.to_dense()


#: edges per chunk of the attention computation (a few [chunk, d] temporaries: ~0.5 GB at d = 64)
ATTENTION_CHUNK = 1 << 20


def knowledge_aware_attention(ckg, node_embedding, relation_embedding, trans_w):
    """Attention weights of every CKG edge (KGAT Eq. 4-5, Multi-KG4Rec Eq. 8).

    Args:
        ckg (CollaborativeKG): the graph.
        node_embedding (Tensor): [n_nodes, d] embeddings e of users and entities.
        relation_embedding (Tensor): [n_relations, k] e_r.
        trans_w (Tensor): [n_relations, d, k] W_r.

    Returns:
        Tensor: [E] pi(h, r, t), softmax-normalised over the triples of each head.
    """
    scores = node_embedding.new_empty(ckg.num_edges)
    for r, start, end in ckg.relation_slices:  # loop over relations (tens), never over edges
        w_r = trans_w[r]
        for a in range(start, end, ATTENTION_CHUNK):  # bounded memory: [chunk, d] temporaries
            b = min(a + ATTENTION_CHUNK, end)
            h = node_embedding[ckg.head[a:b]] @ w_r
            t = node_embedding[ckg.tail[a:b]] @ w_r
            scores[a:b] = (t * torch.tanh(h + relation_embedding[r])).sum(dim=1)
    return segment_softmax(scores, ckg.head, num_nodes=ckg.n_nodes)


AGGREGATOR_TYPES = ("bi", "gcn", "graphsage", "light")


class Aggregator(nn.Module):
    """KGAT's aggregators; ``bi`` is the Bi-Interaction of Multi-KG4Rec Eq. 9:
    LeakyReLU(W1 (e_h + e_Nh)) + LeakyReLU(W2 (e_h * e_Nh)).  [N, d_in] -> [N, d_out].

    ``light`` (beyond the papers) is LightGCN's layer on the attentive CKG: e_h' = e_Nh, no weights, no
    non-linearity, no dropout, so d_out = d_in."""

    def __init__(self, input_dim, output_dim, dropout, aggregator_type="bi"):
        super().__init__()
        self.aggregator_type = aggregator_type
        if aggregator_type == "light":
            pass
        elif aggregator_type == "gcn":
            self.W = nn.Linear(input_dim, output_dim)
        elif aggregator_type == "graphsage":
            self.W = nn.Linear(input_dim * 2, output_dim)
        elif aggregator_type == "bi":
            self.W1 = nn.Linear(input_dim, output_dim)
            self.W2 = nn.Linear(input_dim, output_dim)
        else:
            raise ValueError(f"config 'aggregator_type': {aggregator_type!r} is not one of {list(AGGREGATOR_TYPES)}")
        self.activation = nn.LeakyReLU()
        self.message_dropout = nn.Dropout(dropout)

    def forward(self, adjacency, ego):
        side = adjacency @ ego  # e_Nh = sum_t pi(h,r,t) e_t  (PropagationMatrix or torch sparse)
        if self.aggregator_type == "light":
            return side
        ego = ego[: side.shape[0]]  # a sampled block [n_dst, n_src]: the destinations are the prefix
        if self.aggregator_type == "gcn":
            out = self.activation(self.W(ego + side))
        elif self.aggregator_type == "graphsage":
            out = self.activation(self.W(torch.cat([ego, side], dim=1)))
        else:
            out = self.activation(self.W1(ego + side)) + self.activation(self.W2(ego * side))
        return self.message_dropout(out)


class KnowledgePropagation(nn.Module):
    """L aggregation layers; returns the concatenation [e^(0) || norm(e^(1)) || ... || norm(e^(L))]
    (KGAT Eq. 11, Multi-KG4Rec Eq. 10).  [N, d] -> [N, d + sum(layers)].

    With ``aggregator_type: light`` every layer keeps size d (only ``len(layers)`` is used) and the layer
    outputs are concatenated without L2 normalisation, as LightGCN combines its layers."""

    def __init__(self, embedding_size, layers, dropout, aggregator_type):
        super().__init__()
        if aggregator_type not in AGGREGATOR_TYPES:
            raise ValueError(f"config 'aggregator_type': {aggregator_type!r} is not one of {list(AGGREGATOR_TYPES)}")
        self.light = aggregator_type == "light"
        dims = [embedding_size] * (len(layers) + 1) if self.light else [embedding_size] + list(layers)
        self.aggregator_layers = nn.ModuleList(
            Aggregator(i, o, dropout, aggregator_type) for i, o in zip(dims[:-1], dims[1:])
        )
        self.output_dim = sum(dims)

    def forward(self, adjacency, ego):
        """``adjacency``: one [N, N] matrix for every layer (full graph), or a list of L sampled blocks in
        layer order (:mod:`recbole_mkg.model.neighbour_sampling`), the last one's rows being the targets.
        Returns the representations of all N nodes, or of the targets."""
        blocks = adjacency if isinstance(adjacency, (list, tuple)) else [adjacency] * len(self.aggregator_layers)
        n_out = blocks[-1].shape[0]
        outputs = [ego[:n_out]]
        for aggregator, block in zip(self.aggregator_layers, blocks):
            ego = aggregator(block, ego)
            outputs.append((ego if self.light else F.normalize(ego, p=2, dim=1))[:n_out])
        return torch.cat(outputs, dim=1)


class CrossModalAttention(nn.Module):
    """Multi-head attention of one modality whose queries attend to its own keys/values and, when
    ``cross`` is on, to the other modality's (Multi-KG4Rec Eq. 4-6):
    head_i = Attention(Q_i^m, [K_i^m ; K_i^o], [V_i^m ; V_i^o]);  MHA = [head_1 ... head_h] W^O."""

    def __init__(self, d_model, n_heads, dropout):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"config 'n_heads' ({n_heads}) must divide 'embedding_size' ({d_model})")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def split_heads(self, x):  # [B, L, d] -> [B, h, L, d_head]
        return x.view(x.size(0), x.size(1), self.n_heads, self.d_head).transpose(1, 2)

    def keys_values(self, x):
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(self, x, kv, keep):
        """x [B, L, d] queries of this modality; kv: (K, V) [B, h, L_kv, d_head], its own keys/values or
        the concatenation of both modalities'; keep [B, 1, 1, L_kv] bool, False at padding.
        Returns [B, L, d]."""
        q = self.split_heads(self.q(x))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=keep, dropout_p=dropout)
        return self.out(out.transpose(1, 2).reshape(x.shape))


class CrossModalTransformerLayer(nn.Module):
    """One text+visual transformer block: cross-modal MHA, FFN (Eq. 7), residuals and LayerNorm."""

    def __init__(self, modalities, d_model, n_heads, inner_size, dropout, attn_dropout, cross_to):
        super().__init__()
        self.modalities = list(modalities)
        self.cross_to = cross_to  # modality -> other modality its queries also attend to (or None)
        self.attention = nn.ModuleDict({m: CrossModalAttention(d_model, n_heads, attn_dropout) for m in modalities})
        self.norm1 = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in modalities})
        self.ffn = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(d_model, inner_size), nn.ReLU(), nn.Linear(inner_size, d_model))
            for m in modalities
        })
        self.norm2 = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in modalities})
        self.dropout = nn.Dropout(dropout)

    def forward(self, xs, keep_own, keep_both, first_only=False):
        """xs: modality -> [B, L, d]. Returns modality -> [B, L, d], or [B, 1, d] with ``first_only``:
        only position 0's queries (keys and values still span the whole sequence), which is all the
        last block must compute when only the item's own output is read."""
        kvs = {m: self.attention[m].keys_values(xs[m]) for m in self.modalities}
        both = None
        if self.cross_to:  # [K^v ; K^t], [V^v ; V^t]: built once, shared by both query modalities
            order = [m for m in ("visual", "text") if m in kvs]
            both = tuple(torch.cat([kvs[m][i] for m in order], dim=2) for i in (0, 1))
        out = {}
        for m in self.modalities:  # loop over the (at most two) modalities
            cross = m in self.cross_to
            x = xs[m][:, :1] if first_only else xs[m]
            h = self.attention[m](x, both if cross else kvs[m], keep_both if cross else keep_own)
            h = self.norm1[m](x + self.dropout(h))
            out[m] = self.norm2[m](h + self.dropout(self.ffn[m](h)))
        return out


#: cross-attention direction -> {query modality: the other modality it also attends to}
CROSS_DIRECTIONS = {
    "bidirectional": {"visual": "text", "text": "visual"},
    "text_to_visual": {"text": "visual"},
    "visual_to_text": {"visual": "text"},
    "none": {},
}


class CrossModalTransformer(nn.Module):
    """Stack of :class:`CrossModalTransformerLayer` over neighbour sequences.

    ``direction``: ``bidirectional`` (both modalities' queries attend to both), ``text_to_visual``
    (text queries also attend to visual keys/values; visual queries to visual only), ``visual_to_text``,
    or ``none`` (two independent self-attention transformers). With one modality, plain self-attention.
    """

    def __init__(self, modalities, d_model, n_layers, n_heads, inner_size, dropout, attn_dropout, direction):
        super().__init__()
        if direction not in CROSS_DIRECTIONS:
            raise ValueError(f"config 'cross_attention': {direction!r} is not one of {list(CROSS_DIRECTIONS)}")
        cross_to = {q: o for q, o in CROSS_DIRECTIONS[direction].items() if q in modalities and o in modalities}
        self.layers = nn.ModuleList(
            CrossModalTransformerLayer(modalities, d_model, n_heads, inner_size, dropout, attn_dropout, cross_to)
            for _ in range(n_layers)
        )

    def forward(self, xs, key_padding, first_only=False):
        """xs: modality -> [B, L, d]; key_padding [B, L] bool, True at padding. Returns modality -> [B, L, d],
        or with ``first_only`` the sequence heads' outputs [B, d] alone: the last block then computes only
        position 0's queries and FFN (the same values, about a third less work with 3 blocks)."""
        # boolean "may attend" masks (a float -inf bias gives the same values but a slower CPU kernel:
        # 0.165 s against 0.095 s per fwd+bwd at ml-1m's size); position 0, the item, is never padding
        keep_own = ~key_padding[:, None, None, :]
        keep_both = torch.cat([keep_own, keep_own], dim=-1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            xs = layer(xs, keep_own, keep_both, first_only=first_only and i == last)
        return {m: x[:, 0] for m, x in xs.items()} if first_only else xs
