r"""Multi-KG4Rec: multimodal fusion framework based on knowledge graph for personalized recommendation.

Reference:
    Jingjing Wang, Haoran Xie, Siyu Zhang, S. Joe Qin, Xiaohui Tao, Fu Lee Wang, Xiaoliang Xu.
    "Multimodal fusion framework based on knowledge graph for personalized recommendation."
    Expert Systems With Applications 268 (2025) 126308.

Equations (numbered as in the paper's method section, 4.2):

* Embedding module: per-entity CLIP-sized visual and text features f^m (any dimension, read from the
  feature files) reduced to the embedding size by a non-linear layer, x^m = LeakyReLU(W^m f^m + b^m);
  ID embeddings for users and entities; TransR g(h,r,t) = ||W_r e_h + e_r - W_r e_t||^2 and its
  pairwise loss L_KG = -ln sigma(g(h,r,t') - g(h,r,t)) (Eq. 1-2).
* Multimodal fusion: for each item, a BFS neighbour sequence S_i of length N on the collaborative KG
  (item first, then users and attribute entities by hop). Text and visual transformer blocks
  (default 3 blocks, 8 heads) whose visual heads compute
  head_i^v = Attention(Q_i^v, [K_i^v ; K_i^t], [V_i^v ; V_i^t]) and text heads symmetrically (Eq. 3-5),
  MHA^v = [head_1^v ... head_h^v] W^O (Eq. 6), FFN(x) = ReLU(x W_1 + b_1) W_2 + b_2 (Eq. 7), with residuals
  and LayerNorm. The item's output at position 0 is its fused representation in that modality.
* Information propagation: pi(h,r,t) = (W_r e_t)^T tanh(W_r e_h + e_r), softmax over each head's triples
  (Eq. 8), e_Nh = sum pi(h,r,t) e_t, Bi-Interaction
  LeakyReLU(W_1(e_h + e_Nh)) + LeakyReLU(W_2(e_h * e_Nh)) (Eq. 9), default 3 layers of 64/32/16.
* Prediction: e_u* = e_u^(0) || ... || e_u^(L) (Eq. 10) per modality, visual and text views concatenated
  (Eq. 11), y(u,i) = e_u*^T e_i* ; L = L_KG + L_BPR + lambda ||Theta||^2 (Eq. 12-13).

Choices where the paper is vague (also in docs/models.md):

* **Single-modal graphs.** Each modality is one *view* of the same collaborative KG: the view gives
  every node an embedding, x^m_e = e_e + mask^m_e * LeakyReLU(W^m f^m_e + b^m) for entities and the ID
  embedding e_u for users. The ID term gives items and users collaborative capacity (two items with
  equal posters stay distinguishable); the presence mask means an entity without an image keeps its ID
  embedding only, never an invented vector. Users enter a modal view through their ID embedding and
  receive modality content by propagation over the interaction edges (users have no images or texts).
* **Attention.** As in KGAT, pi(h,r,t) is recomputed once per epoch without gradient from each view's
  pre-fusion embeddings x^m and the TransR parameters (W_r, e_r), which are shared by the views; TransR
  is trained on every view's x^m.
* **Speed.** The last transformer block computes only position 0 (the item itself), the one output
  read (exact). ``fusion_sample_ratio`` < 1 is an option beyond the paper: each training batch
  recomputes the transformer for that fraction of items; the others add their cached (stale) transformer
  residual to their current embedding.
* **Compiled fusion** (beyond the paper, speed only). ``fusion_compile`` runs the transformer through
  ``torch.compile`` with that mode (``reduce-overhead``: CUDA graphs, for GPUs where the batch is
  launch-bound); the same function, the same parameters and checkpoints (dropout masks come from
  Inductor's generator, so a run is not bit-identical to an eager one).
* **Propagation graph** (beyond the paper). ``propagation_graph: interactions`` propagates over the
  user-item edges alone with LightGCN's fixed symmetric normalisation (no attention update); the KG then
  enters through the BFS sequences of the transformer and the TransR loss. Default ``ckg`` (the paper).
* **Training.** KGAT's alternating schedule (a BPR pass, a TransR pass, the attention update per epoch;
  :class:`recbole_mkg.trainer.MultiKG4RecTrainer`): the paper sums the losses (Eq. 13) but gives no
  schedule, and alternating is what its KGAT-derived propagation was designed with.
* **Ablations.** ``modalities: []`` leaves one ID view with no transformer: the model *is* the KGAT port
  (the paper's "w/o t&v" row). ``modalities: [text]`` / ``[visual]`` keep one view with a self-attention
  transformer. ``cross_attention`` picks bidirectional, one-way or no cross-modal attention.
"""
import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization

from recbole_mkg.data.dataset import MultimodalKGDataset, requested_modalities
from recbole_mkg.model.abstract_recommender import FullGraphKGRecommender
from recbole_mkg.model.knowledge_aware_recommender.kgat import transr_loss
from recbole_mkg.model.layers import (
    CROSS_DIRECTIONS,
    CollaborativeKG,
    CrossModalTransformer,
    KnowledgePropagation,
    knowledge_aware_attention,
    propagation_graph,
)
from recbole_mkg.model.neighbour_sampling import check_sample_sizes, sample_hops
from recbole_mkg.model.neighbour_sequences import item_neighbour_sequences

ID_VIEW = "id"
#: what an item's row becomes after the transformer: its output (the paper), its pre-fusion row plus it, or
#: its pre-fusion row plus it times a learned per-modality gate that starts at 0
FUSION_OUTPUTS = ("replace", "add", "gated")


def _check_positive_int(config, key):
    value = config[key]
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"config '{key}' must be a positive integer, got {value!r}")
    return value


class MultiKG4Rec(FullGraphKGRecommender):
    dataset_class = MultimodalKGDataset

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = _check_positive_int(config, "embedding_size")
        self.kg_embedding_size = _check_positive_int(config, "kg_embedding_size")
        self.modalities = requested_modalities(config)
        self.views = self.modalities or [ID_VIEW]
        direction = config["cross_attention"]
        if direction not in CROSS_DIRECTIONS:
            raise ValueError(f"config 'cross_attention': {direction!r} is not one of {list(CROSS_DIRECTIONS)}")

        # ---- embedding module ----
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.entity_embedding = nn.Embedding(self.n_entities, self.embedding_size)
        self.relation_embedding = nn.Embedding(self.n_relations, self.kg_embedding_size)
        self.trans_w = nn.Embedding(self.n_relations, self.embedding_size * self.kg_embedding_size)
        self.modal_projection = nn.ModuleDict()
        for m in self.modalities:
            if m not in getattr(dataset, "modal_features", {}):
                raise ValueError(f"dataset has no {m!r} features loaded; MultiKG4Rec needs a MultimodalKGDataset")
            # Only entities that have the modality are stored and projected: features_m [P, D] for the
            # P present entities, present_m [P] their ids, row_m [n_entities] their row (P = "missing").
            mask = dataset.modal_masks[m]
            present = torch.nonzero(mask).flatten()
            row = torch.full((self.n_entities,), len(present), dtype=torch.long)
            row[present] = torch.arange(len(present))
            features = dataset.modal_features[m][present]
            self.register_buffer(f"features_{m}", torch.cat([features, features.new_zeros(1, features.shape[1])]),
                                 persistent=False)
            self.register_buffer(f"present_{m}", present, persistent=False)
            self.register_buffer(f"row_{m}", row, persistent=False)
            self.register_buffer(f"mask_{m}", mask.float().unsqueeze(1), persistent=False)
            self.modal_projection[m] = nn.Sequential(nn.Linear(features.shape[1], self.embedding_size), nn.LeakyReLU())

        # ---- multimodal fusion module ----
        self.transformer = None
        if self.modalities and config["n_transformer_layers"] > 0:
            self.seq_len = _check_positive_int(config, "neighbour_seq_len")
            sequences, padding = item_neighbour_sequences(
                dataset, self.n_users, self.n_items, self.seq_len, config["bfs_max_hops"], config["seed"]
            )
            self.register_buffer("item_sequences", sequences, persistent=False)
            self.register_buffer("item_padding", padding, persistent=False)
            self.transformer = CrossModalTransformer(
                self.modalities, self.embedding_size, config["n_transformer_layers"],
                _check_positive_int(config, "n_heads"), _check_positive_int(config, "inner_size"),
                config["hidden_dropout"], config["attn_dropout"], direction,
            )
        self.fusion_output = config["fusion_output"] or "replace"
        if self.fusion_output not in FUSION_OUTPUTS:
            raise ValueError(f"config 'fusion_output': {self.fusion_output!r} is not one of {list(FUSION_OUTPUTS)}")
        if self.fusion_output == "gated" and self.transformer is not None:
            # ReZero-style scalar per modality, 0 at the start: training starts from the model without the
            # transformer (items keep their pre-fusion rows) and opens the gate as far as the data asks
            self.fusion_gate = nn.ParameterDict({m: nn.Parameter(torch.zeros(1)) for m in self.modalities})
        ratio = config["fusion_sample_ratio"]  # validated by the plugin's Config
        self.fusion_sample_ratio = float(1.0 if ratio is None else ratio) if self.transformer is not None else 1.0
        if self.fusion_sample_ratio < 1.0:
            for m in self.modalities:
                self.register_buffer(f"fused_residual_{m}", torch.zeros(self.n_items, self.embedding_size),
                                     persistent=False)
        self._fused_cache_valid = False
        self.neighbour_sample_sizes = check_sample_sizes(config["neighbour_sample_sizes"], len(config["layers"]))
        # torch.compile'd forward of the transformer (an option, speed only): kept out of the module tree, so
        # that parameters, state_dict and checkpoints stay those of the eager transformer it wraps. With
        # neighbour sampling the number of items in a batch's field varies: compiled for dynamic shapes
        # (else every new size would compile again).
        self.__dict__["_compiled_transformer"] = None
        mode = config["fusion_compile"]  # validated by the plugin's Config
        if self.transformer is not None and mode is not None:
            self.__dict__["_compiled_transformer"] = torch.compile(
                self.transformer, mode=mode, dynamic=True if self.neighbour_sample_sizes is not None else None)
        if self.neighbour_sample_sizes is not None and self.fusion_sample_ratio < 1.0:
            raise ValueError("config 'fusion_sample_ratio' < 1 and 'neighbour_sample_sizes' exclude each other: "
                             "with neighbour sampling the transformer already runs only on the batch's "
                             "receptive field; set fusion_sample_ratio: 1.0")

        # ---- information propagation module ----
        self.ckg = CollaborativeKG(dataset)
        self.propagation = nn.ModuleDict({
            v: KnowledgePropagation(self.embedding_size, config["layers"], config["mess_dropout"],
                                    config["aggregator_type"])
            for v in self.views
        })
        self.apply(xavier_normal_initialization)
        self.propagation_graph = propagation_graph(config, self.neighbour_sample_sizes)
        for v in self.views:
            self.register_buffer(f"attention_{v}", self.ckg.initial_weight(self.propagation_graph))
        self._adjacency = {}

    # ---- embeddings of a view -------------------------------------------------------------------
    def entity_view(self, view, entity_ids=None):
        """x^v of entities: ID embedding + mask * LeakyReLU(W^v f^v + b^v).  ids [B] (or all) -> [B, d].

        For the full table only the entities that have the modality are projected (``index_add``)."""
        if view == ID_VIEW:
            return self.entity_embedding.weight if entity_ids is None else self.entity_embedding(entity_ids)
        features = getattr(self, f"features_{view}")
        if entity_ids is None:
            present = getattr(self, f"present_{view}")
            projected = self.modal_projection[view](features[:-1])
            return self.entity_embedding.weight.index_add(0, present, projected)
        rows = getattr(self, f"row_{view}")[entity_ids]
        mask = getattr(self, f"mask_{view}")[entity_ids]
        return self.entity_embedding(entity_ids) + mask * self.modal_projection[view](features[rows])

    def view_rows(self, view, nodes):
        """x^v [n, d] of global CKG nodes ``nodes`` [n]: users' ID embeddings, entities' :meth:`entity_view`."""
        return self.node_rows(nodes, lambda entities: self.entity_view(view, entities))

    def view_inputs(self):
        """view -> pre-fusion node embeddings [n_users + n_entities, d]."""
        users = self.user_embedding.weight
        return {v: torch.cat([users, self.entity_view(v)], dim=0) for v in self.views}

    def fuse(self, inputs):
        """Replace each item's row by its transformer output over its BFS sequence (Eq. 3-7)."""
        if self.transformer is None:
            return inputs
        fused = self.fused_items(inputs)  # modality -> [n_items, d]
        start, end = self.n_users, self.n_users + self.n_items
        return {m: torch.cat([inputs[m][:start], fused[m], inputs[m][end:]], dim=0) for m in self.modalities}

    def _transformer_on(self, inputs, items=None):
        """Transformer outputs at position 0 of the BFS sequences of ``items`` [k] (all when None) -> [k, d]."""
        sequences = self.item_sequences if items is None else self.item_sequences[items]
        padding = self.item_padding if items is None else self.item_padding[items]
        fused = self.fusion_transformer({m: inputs[m][sequences] for m in self.modalities}, padding, first_only=True)
        rows = slice(self.n_users, self.n_users + self.n_items) if items is None else self.n_users + items
        return self._fusion_output(fused, inputs, rows)

    def _fusion_output(self, fused, table, rows):
        """Items' rows after fusion, modality -> [k, d], from the transformer's outputs ``fused`` and, for
        ``add``/``gated`` only, their pre-fusion rows ``table[m][rows]``: ``replace`` (the paper, Eq. 7: the
        output), ``add`` (beyond the paper: pre-fusion row + output, so that the item's ID embedding reaches
        the propagation without the transformer's LayerNorm, which gives every row the same scale) or
        ``gated`` (beyond the paper: pre-fusion row + g_m * output, g_m a learned scalar starting at 0)."""
        if self.fusion_output == "add":
            return {m: table[m][rows] + fused[m] for m in fused}
        if self.fusion_output == "gated":
            return {m: table[m][rows] + self.fusion_gate[m] * fused[m] for m in fused}
        return fused

    @property
    def fusion_transformer(self):
        """The transformer to call: its ``torch.compile`` wrapper with ``fusion_compile``, else itself."""
        compiled = self.__dict__["_compiled_transformer"]
        return self.transformer if compiled is None else compiled

    def fused_items(self, inputs):
        """modality -> [n_items, d] fused item representations.

        Faithful (``fusion_sample_ratio: 1.0``): the transformer runs over every item's sequence. Below 1
        (a speed option beyond the paper) a training forward recomputes, with gradient, only a random
        ``ratio * n_items`` items. Every other item i gets ``x_i + r_i``: its *current* pre-fusion row x_i
        (so its ID embedding and modal projection get their gradient every batch) plus r_i, the detached
        residual ``transformer output - x_i`` cached from its latest recomputation (a control-variate form
        of GNNAutoScale's "historical embeddings": only what the neighbours contribute is stale).
        Evaluation always recomputes every item and refreshes the cache."""
        ratio = self.fusion_sample_ratio
        own = {m: inputs[m][self.n_users:self.n_users + self.n_items] for m in self.modalities}
        if ratio >= 1.0 or not self.training:
            fused = self._transformer_on(inputs)
            if ratio < 1.0:
                self._store_residual(None, fused, own)
            return fused
        if not self._fused_cache_valid:
            with torch.no_grad():
                self._store_residual(None, self._transformer_on(inputs), own)
        k = max(1, int(round(ratio * self.n_items)))
        items = torch.randperm(self.n_items, device=self.item_sequences.device)[:k]
        fresh = self._transformer_on(inputs, items)
        fused = {m: (own[m] + getattr(self, f"fused_residual_{m}")).index_put((items,), fresh[m])
                 for m in self.modalities}
        self._store_residual(items, fresh, {m: own[m][items] for m in self.modalities})
        return fused

    @torch.no_grad()
    def _store_residual(self, items, fused, own):
        """Cache ``fused - own`` (detached) for ``items`` [k] (all when None)."""
        for m in self.modalities:
            cache = getattr(self, f"fused_residual_{m}")
            if items is None:
                cache.copy_(fused[m] - own[m])
            else:
                cache[items] = fused[m] - own[m]
        self._fused_cache_valid = True

    # ---- graph ------------------------------------------------------------------------------------
    def adjacency(self, view):
        attention = getattr(self, f"attention_{view}")
        cached = self._adjacency.get(view)
        if cached is None or cached.device != attention.device:
            cached = self._adjacency[view] = self.ckg.adjacency(attention, self.propagation_graph)
        return cached

    def _trans_w(self):
        return self.trans_w.weight.view(self.n_relations, self.embedding_size, self.kg_embedding_size)

    @torch.no_grad()
    def update_attentive_A(self):
        """Recompute pi(h,r,t) (Eq. 8) of every CKG edge in every view (``propagation_graph:
        interactions``: fixed weights, nothing to update)."""
        if self.propagation_graph == "interactions":
            return
        inputs = self.view_inputs()
        for v in self.views:
            setattr(self, f"attention_{v}", knowledge_aware_attention(
                self.ckg, inputs[v], self.relation_embedding.weight, self._trans_w()))
        self._adjacency = {}

    def load_state_dict(self, state_dict, strict=True):
        result = super().load_state_dict(state_dict, strict)
        self._adjacency = {}
        self._fused_cache_valid = False
        return result

    # ---- forward / losses (BPR, predict, full_sort_predict: FullGraphKGRecommender) ----------------
    def forward(self):
        """Returns user [n_users, V*D] and entity [n_entities, V*D] representations (Eq. 10-11);
        scores are their inner products and the BPR loss is Eq. 12 (FullGraphKGRecommender)."""
        ego = self.fuse(self.view_inputs())
        outputs = [self.propagation[v](self.adjacency(v), ego[v]) for v in self.views]
        return torch.split(torch.cat(outputs, dim=1), [self.n_users, self.n_entities])

    def forward_sampled(self, targets):
        """Representations [T, V*D] of ``targets`` [T] from their sampled receptive field: the transformer
        runs on the items of that field only (their BFS sequences), then each view propagates over the
        same sampled edges with its own attention values."""
        hops = sample_hops(self.adjacency(self.views[0]), targets, self.neighbour_sample_sizes)
        nodes = hops.nodes
        ego = {v: self.view_rows(v, nodes) for v in self.views}
        if self.transformer is not None:
            where = torch.nonzero((nodes >= self.n_users) & (nodes < self.n_users + self.n_items)).flatten()
            items = nodes[where] - self.n_users
            sequences = self.item_sequences[items]  # [k, N]
            members = {m: self.view_rows(m, sequences.flatten()).view(*sequences.shape, -1) for m in self.modalities}
            fused = self.fusion_transformer(members, self.item_padding[items], first_only=True)
            fused = self._fusion_output(fused, ego, where)
            ego = {m: ego[m].index_put((where,), fused[m]) for m in self.modalities}
        outputs = [self.propagation[v](hops.blocks(self.adjacency(v).csr.values()), ego[v]) for v in self.views]
        return torch.cat(outputs, dim=1)

    def calculate_kg_loss(self, interaction):
        """TransR loss (Eq. 1-2) on every view's entity embeddings."""
        h, r, pos_t, neg_t = self.kg_batch(interaction)
        trans_w = self._trans_w()
        return sum(
            transr_loss(lambda ids, v=v: self.entity_view(v, ids), self.relation_embedding, trans_w,
                        h, r, pos_t, neg_t, self.reg_loss, self.reg_weight)
            for v in self.views
        )
