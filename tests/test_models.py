"""Multi-KG4Rec and the KGAT port: shapes, gradients, full-sort vs per-pair, ablations, equivalences."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction

from recbole_mkg.config import Config
from recbole_mkg.model.neighbour_sequences import bfs_sequences
from tests.conftest import assert_full_sort_matches_predict, assert_gradients_reach, bpr_batch, build_model, tiny_config


def build(root, model="MultiKG4Rec", **overrides):
    model_obj, _, (train, _, _) = build_model(root, model, **overrides)
    return model_obj, train._dataset



@pytest.fixture(scope="module")
def model_and_data(tiny_root):
    return build(tiny_root)


def test_shapes(model_and_data):
    model, _ = model_and_data
    user, entity = model.forward()
    per_view = 16 + 16 + 8  # embedding + layers [16, 8]
    assert user.shape == (model.n_users, 2 * per_view)
    assert entity.shape == (model.n_entities, 2 * per_view)
    assert model.item_sequences.shape == (model.n_items, 6)


def test_gradients_reach_every_part(model_and_data):
    model, _ = model_and_data
    model.train()
    assert_gradients_reach(model, model.calculate_loss(bpr_batch(model)), [
        "user_embedding.weight", "entity_embedding.weight", "modal_projection.visual.0.weight",
        "modal_projection.text.0.weight", "transformer.layers.0.attention.visual.q.weight",
        "transformer.layers.0.ffn.text.0.weight", "propagation.visual.aggregator_layers.0.W1.weight",
        "propagation.text.aggregator_layers.1.W2.weight"])
    model.zero_grad()
    kg = Interaction({
        model.HEAD_ENTITY_ID: torch.tensor([1, 2, 3]), model.RELATION_ID: torch.tensor([1, 2, 1]),
        model.TAIL_ENTITY_ID: torch.tensor([4, 5, 6]), model.NEG_TAIL_ENTITY_ID: torch.tensor([7, 8, 9]),
    })
    loss = model.calculate_kg_loss(kg)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.trans_w.weight.grad.abs().sum() > 0
    assert model.modal_projection["text"][0].weight.grad is not None


def test_full_sort_equals_per_pair_predict(model_and_data):
    model, _ = model_and_data
    model.update_attentive_A()
    assert_full_sort_matches_predict(model, (1, 5, 9))


def test_attention_is_a_softmax_over_each_heads_triples(model_and_data):
    model, _ = model_and_data
    model.update_attentive_A()
    att = model.attention_visual
    sums = torch.zeros(model.ckg.n_nodes).index_add_(0, model.ckg.head, att)
    heads = torch.unique(model.ckg.head)
    torch.testing.assert_close(sums[heads], torch.ones(len(heads)))
    assert not torch.equal(model.attention_visual, model.attention_text)  # per-view attention


def test_attention_in_small_chunks_equals_one_pass(model_and_data, monkeypatch):
    import recbole_mkg.model.layers as layers

    model, _ = model_and_data
    args = (model.ckg, model.view_inputs()["text"].detach(), model.relation_embedding.weight.detach(),
            model._trans_w().detach())
    whole = layers.knowledge_aware_attention(*args)
    monkeypatch.setattr(layers, "ATTENTION_CHUNK", 3)
    torch.testing.assert_close(layers.knowledge_aware_attention(*args), whole)


def test_kgat_initial_adjacency_matches_recbole_formula(tiny_root):
    model, dataset = build(tiny_root, model="KGAT")
    ckg = dataset.ckg_graph(form="coo", value_field="relation_id")
    expected = None
    for r in np.unique(ckg.data):  # RecBole: sum over relations of D_r^-1 A_r
        keep = ckg.data == r
        a = sp.coo_matrix((np.ones(keep.sum()), (ckg.row[keep], ckg.col[keep])), shape=ckg.shape).tocsr()
        deg = np.asarray(a.sum(1)).ravel()
        d_inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
        part = sp.diags(d_inv) @ a
        expected = part if expected is None else expected + part
    np.testing.assert_allclose(model.A_in.to_dense().numpy(), expected.toarray(), rtol=1e-6)


def test_edge_order_is_relation_head_tail_in_both_sorting_paths():
    from recbole_mkg.model.layers import _edge_order

    rng = np.random.default_rng(0)
    rel, head, tail = rng.integers(0, 4, 500), rng.integers(0, 30, 500), rng.integers(0, 30, 500)
    expected = np.lexsort((tail, head, rel))  # stable: equal triples keep their input order
    np.testing.assert_array_equal(_edge_order(rel, head, tail, 4, 30), expected)  # combined int64 key
    np.testing.assert_array_equal(_edge_order(rel, head, tail, 4, 2**40), expected)  # key would overflow


def test_csr_pattern_adjacency_equals_the_coalesced_reference_with_parallel_edges():
    """CollaborativeKG.adjacency scatters values into a CSR pattern fixed at construction; it must equal
    coalescing the COO matrix (parallel (h, t) pairs summed) for A and for the A^T of the backward."""
    from recbole_mkg.model.layers import PropagationMatrix, _csr_pattern

    rng = np.random.default_rng(0)
    n, e = 40, 400  # 400 draws over 1,600 cells: many parallel entries
    rows, cols = rng.integers(0, n, e), rng.integers(0, n, e)
    crow, col, slot = _csr_pattern(rows, cols, n)
    assert len(col) == len(set(zip(rows.tolist(), cols.tolist()))) < e
    values = torch.rand(e, dtype=torch.float64)
    index = torch.from_numpy(np.stack([rows, cols]))
    reference = PropagationMatrix(torch.sparse_coo_tensor(index, values, (n, n)))
    slotted = torch.zeros(len(col), dtype=torch.float64).index_add_(0, torch.from_numpy(slot), values)
    csr = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(col), slotted, (n, n))
    for name in ("crow_indices", "col_indices", "values"):
        torch.testing.assert_close(getattr(csr, name)(), getattr(reference.csr, name)())


def test_ckg_adjacency_and_its_transpose_match_the_edges(model_and_data):
    model, _ = model_and_data
    ckg = model.ckg
    values = torch.rand(ckg.num_edges)
    matrix = ckg.adjacency(values)
    dense = torch.zeros(ckg.n_nodes, ckg.n_nodes).index_put_((ckg.head, ckg.tail), values, accumulate=True)
    torch.testing.assert_close(matrix.to_dense(), dense)
    torch.testing.assert_close(matrix.csr_t.to_dense(), dense.t())
    assert "a_slot" not in ckg.state_dict()  # derived buffers: checkpoints do not carry them


def test_propagation_matrix_product_and_gradient_match_the_sparse_reference():
    from recbole_mkg.model.layers import PropagationMatrix

    g = torch.Generator().manual_seed(0)
    n, e = 50, 300
    index = torch.randint(0, n, (2, e), generator=g)
    values = torch.rand(e, generator=g)
    coo = torch.sparse_coo_tensor(index, values, (n, n)).coalesce()
    matrix = PropagationMatrix(coo)
    x = torch.randn(n, 7, generator=g, requires_grad=True)
    weights = torch.randn(n, 7, generator=g)
    (matrix @ x * weights).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    (torch.sparse.mm(coo, x) * weights).sum().backward()
    torch.testing.assert_close(grad, x.grad)
    torch.testing.assert_close(matrix @ x.detach(), coo.to_dense() @ x.detach())
    torch.testing.assert_close(matrix.to_dense(), coo.to_dense())


def test_light_aggregator_is_lightgcn_propagation_on_the_attentive_graph(tiny_root):
    from recbole_mkg.model.layers import KnowledgePropagation, PropagationMatrix

    g = torch.Generator().manual_seed(0)
    n = 30
    dense = torch.rand(n, n, generator=g) * (torch.rand(n, n, generator=g) < 0.2)
    matrix = PropagationMatrix(dense.to_sparse_coo())
    x = torch.randn(n, 8, generator=g)
    light = KnowledgePropagation(8, [64, 32, 16], dropout=0.5, aggregator_type="light").train()
    assert light.output_dim == 8 * 4 and not list(light.parameters())  # sizes ignored, no weights, no dropout
    expected = torch.cat([x, dense @ x, dense @ dense @ x, dense @ dense @ dense @ x], dim=1)
    torch.testing.assert_close(light(matrix, x), expected)
    for model in ("KGAT", "MultiKG4Rec"):
        m, _ = build(tiny_root, model=model, aggregator_type="light", layers=[16, 16])
        users, entities = m.forward()
        assert users.shape[1] == 16 * 3 * (1 if model == "KGAT" else len(m.views))
        loss = m.calculate_loss(bpr_batch(m))
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("model_name", ["KGAT", "MultiKG4Rec"])
def test_interactions_graph_is_lightgcns_normalised_user_item_matrix(tiny_root, model_name):
    """propagation_graph: interactions (beyond the papers): A = D^-1/2 R D^-1/2 on the user-item edges,
    nothing on KG triples, and the weights stay fixed through the per-epoch attention update."""
    model, dataset = build(tiny_root, model=model_name, propagation_graph="interactions")
    n_users = dataset.user_num
    inter = dataset.inter_matrix(form="coo")  # the training interactions, [n_users, n_items]
    r = sp.coo_matrix((np.ones(inter.nnz), (inter.row, inter.col + n_users)),
                      shape=(model.ckg.n_nodes, model.ckg.n_nodes)).tocsr()
    r.data[:] = 1.0
    bipartite = r + r.T
    deg = np.asarray(bipartite.sum(1)).ravel()
    d = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0)
    expected = (sp.diags(d) @ bipartite @ sp.diags(d)).toarray()
    adjacency = model.A_in if model_name == "KGAT" else model.adjacency(model.views[0])
    np.testing.assert_allclose(adjacency.to_dense().numpy(), expected, rtol=1e-6, atol=1e-8)
    kg = model.ckg.relation != model.ckg.ui_relation
    assert kg.any()  # the tiny KG has triples, and they carry no weight on this graph
    # ... nor a place in the sparse pattern: propagation visits the user-item edges alone
    assert adjacency.csr.values().numel() == adjacency.csr_t.values().numel() == int((~kg).sum())
    x = torch.randn(model.ckg.n_nodes, 3)
    torch.testing.assert_close(adjacency @ x, torch.from_numpy(expected).float() @ x, rtol=1e-5, atol=1e-6)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("attention")}
    model.update_attentive_A()
    for k, v in before.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    loss = model.calculate_loss(bpr_batch(model))
    loss.backward()
    assert torch.isfinite(loss) and model.entity_embedding.weight.grad is not None
    # the default is the paper's attentive CKG
    paper, _ = build(tiny_root, model=model_name)
    assert paper.propagation_graph == "ckg"


def test_interactions_graph_bad_values(tiny_root):
    with pytest.raises(ValueError, match="config 'propagation_graph' must be ckg .* or interactions"):
        build(tiny_root, model="KGAT", propagation_graph="kg")
    with pytest.raises(ValueError, match="propagation_graph: interactions' and 'neighbour_sample_sizes'"):
        build(tiny_root, model="KGAT", propagation_graph="interactions", neighbour_sample_sizes=[4, 4])


def test_without_modalities_multikg4rec_is_the_kgat_port(tiny_root):
    # the paper's "w/o t&v" row: the propagation reduces to KGAT
    mkg, _ = build(tiny_root, modalities=[])
    kgat, _ = build(tiny_root, model="KGAT")
    assert mkg.transformer is None and len(mkg.modal_projection) == 0 and mkg.views == ["id"]
    state = {k.replace("propagation.", "propagation.id.", 1) if k.startswith("propagation.") else k: v
             for k, v in kgat.state_dict().items()}
    state["attention_id"] = state.pop("attention")
    mkg.load_state_dict(state)
    mkg.eval(), kgat.eval()
    kgat.update_attentive_A(), mkg.update_attentive_A()
    torch.testing.assert_close(mkg.attention_id, kgat.attention)
    for a, b in zip(mkg.forward(), kgat.forward()):
        torch.testing.assert_close(a, b)
    b = bpr_batch(mkg)
    torch.testing.assert_close(mkg.calculate_loss(b), kgat.calculate_loss(b))


def _fused(model):
    model.eval()
    with torch.no_grad():
        return model.fuse(model.view_inputs())


def test_fusion_output_add_keeps_each_items_pre_fusion_row(tiny_root):
    """``fusion_output: add`` (beyond the paper): an item's row is its pre-fusion row plus the transformer's
    output; ``replace`` (the paper) is the output alone. Users' and non-item entities' rows are untouched."""
    paper, _ = build(tiny_root)
    added, _ = build(tiny_root, fusion_output="add")
    added.load_state_dict(paper.state_dict())
    inputs = paper.view_inputs()
    items = slice(paper.n_users, paper.n_users + paper.n_items)
    replaced, summed = _fused(paper), _fused(added)
    for m in paper.modalities:
        torch.testing.assert_close(summed[m][items], replaced[m][items] + inputs[m][items].detach())
        torch.testing.assert_close(summed[m][:paper.n_users], replaced[m][:paper.n_users])
        torch.testing.assert_close(summed[m][items.stop:], replaced[m][items.stop:])
    with pytest.raises(ValueError, match=r"'fusion_output': 'sum' is not one of \['replace', 'add', 'gated'\]"):
        build(tiny_root, fusion_output="sum")


def test_fusion_output_gated_starts_closed_and_learns_its_gate(tiny_root):
    """``fusion_output: gated`` (beyond the paper): item row = pre-fusion row + g_m * transformer output,
    g_m a learned scalar per modality starting at 0, so training starts from the model without the
    transformer; the gate gets a gradient at 0 and at g_m = 1 the rows are those of ``add``."""
    paper, _ = build(tiny_root)
    gated, _ = build(tiny_root, fusion_output="gated")
    assert {k: v.item() for k, v in gated.fusion_gate.items()} == {"visual": 0.0, "text": 0.0}
    state = paper.state_dict()
    gated.load_state_dict({**state, **{k: v for k, v in gated.state_dict().items() if k.startswith("fusion_gate")}})
    inputs = paper.view_inputs()
    items = slice(paper.n_users, paper.n_users + paper.n_items)
    closed, replaced = _fused(gated), _fused(paper)
    for m in paper.modalities:
        torch.testing.assert_close(closed[m], inputs[m].detach())  # gate 0: every row its pre-fusion row
    gated.train()
    loss = gated.calculate_loss(bpr_batch(gated))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().item() > 0 for p in gated.fusion_gate.values())
    with torch.no_grad():
        for p in gated.fusion_gate.values():
            p.fill_(1.0)
    gated.eval()
    opened = _fused(gated)
    for m in paper.modalities:
        torch.testing.assert_close(opened[m][items], replaced[m][items] + inputs[m][items].detach())


def test_text_only_ignores_visual_features(tiny_root):
    model, _ = build(tiny_root, modalities=["text"])
    assert model.views == ["text"] and not hasattr(model, "features_visual")
    assert "modal_projection.visual.0.weight" not in dict(model.named_parameters())
    user, _ = model.forward()
    assert user.shape[1] == 16 + 16 + 8


@pytest.mark.parametrize("direction, text_sees_visual, visual_sees_text", [
    ("bidirectional", True, True), ("text_to_visual", True, False), ("visual_to_text", False, True),
    ("none", False, False),
])
def test_cross_attention_direction(tiny_root, direction, text_sees_visual, visual_sees_text):
    model, _ = build(tiny_root, cross_attention=direction)
    base = _fused(model)
    items = slice(model.n_users + 1, model.n_users + model.n_items)
    original_visual = model.features_visual.clone()
    with torch.no_grad():
        model.features_visual.mul_(-3.0)  # change only the visual input (rows of present entities)
    changed = _fused(model)
    assert not torch.allclose(changed["visual"][items], base["visual"][items])
    assert torch.allclose(changed["text"][items], base["text"][items]) != text_sees_visual
    with torch.no_grad():
        model.features_visual.copy_(original_visual)
        model.features_text.mul_(-3.0)
    changed = _fused(model)
    assert torch.allclose(changed["visual"][items], base["visual"][items]) != visual_sees_text


def test_masked_entities_keep_their_id_embedding(model_and_data):
    model, dataset = model_and_data
    # the compact projection equals the definition x = e + mask * LeakyReLU(W f + b) on every entity
    for view in model.modalities:
        with torch.no_grad():
            full = model.entity_view(view)
            by_ids = model.entity_view(view, torch.arange(model.n_entities))
            expected = model.entity_embedding.weight + dataset.modal_masks[view].float().unsqueeze(1) * \
                model.modal_projection[view](dataset.modal_features[view])
        torch.testing.assert_close(full, expected)
        torch.testing.assert_close(by_ids, expected)
    missing = torch.nonzero(model.mask_visual.squeeze(1) == 0).flatten()
    present = torch.nonzero(model.mask_visual.squeeze(1) == 1).flatten()
    with torch.no_grad():
        x = model.entity_view("visual")
        torch.testing.assert_close(x[missing], model.entity_embedding.weight[missing])
        assert not torch.allclose(x[present], model.entity_embedding.weight[present])


def test_bfs_sequences_order_and_padding():
    # path graph 0-1-2-3-4 plus a leaf 5 on node 1
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 5)]
    rows, cols = zip(*(edges + [(b, a) for a, b in edges]))
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(6, 6))
    seq, pad = bfs_sequences(adj, np.array([0, 2]), seq_len=5, max_hops=2, seed=0)
    # seed 0: itself, hop 1 = {1}, hop 2 = {2, 5}, then padding (3 is 3 hops away)
    assert seq[0, 0] == 0 and seq[0, 1] == 1 and set(seq[0, 2:4]) == {2, 5}
    assert pad[0].tolist() == [False, False, False, False, True]
    # seed 2: itself, hop 1 = {1, 3}, hop 2 = {0, 4, 5}: only two of the three fit
    assert seq[1, 0] == 2 and set(seq[1, 1:3]) == {1, 3} and set(seq[1, 3:5]) < {0, 4, 5}
    assert not pad[1].any()


def test_bfs_sequences_use_training_interactions_only(model_and_data):
    model, dataset = model_and_data
    seqs = model.item_sequences
    assert torch.equal(seqs[:, 0], torch.arange(model.n_items) + model.n_users)
    item = 5
    users = set(dataset.inter_feat[dataset.uid_field][dataset.inter_feat[dataset.iid_field] == item].tolist())
    seq_users = {int(n) for n in seqs[item][~model.item_padding[item]] if n < model.n_users}
    assert seq_users and seq_users <= users


def test_invalid_config_values(tiny_root):
    with pytest.raises(ValueError, match="cross_attention"):
        build(tiny_root, cross_attention="sideways")
    with pytest.raises(ValueError, match="n_heads"):
        build(tiny_root, n_heads=5)
    with pytest.raises(ValueError, match="neighbour_seq_len"):
        build(tiny_root, neighbour_seq_len=0)
    with pytest.raises(ValueError, match="aggregator_type"):
        build(tiny_root, aggregator_type="max")
    for bad in (0, 1.5, "half", True):
        with pytest.raises(ValueError, match="fusion_sample_ratio"):
            build(tiny_root, fusion_sample_ratio=bad)


def test_transformer_first_only_equals_position_zero_of_full_run(tiny_root):
    model, _ = build(tiny_root, n_transformer_layers=2)
    model.eval()
    with torch.no_grad():
        inputs = model.view_inputs()
        seqs = {m: inputs[m][model.item_sequences] for m in model.modalities}
        full = model.transformer(seqs, model.item_padding)
        first = model.transformer(seqs, model.item_padding, first_only=True)
    for m in model.modalities:
        assert first[m].shape == (model.n_items, 16)
        torch.testing.assert_close(first[m], full[m][:, 0])


def test_fusion_sample_ratio_recomputes_a_fraction_and_caches_residuals_of_the_rest(tiny_root):
    faithful, _ = build(tiny_root)
    fast, _ = build(tiny_root, fusion_sample_ratio=0.25)
    fast.load_state_dict(faithful.state_dict())
    assert not any(k.startswith("fused_residual") for k in fast.state_dict())  # the cache is not saved
    # evaluation always runs the full transformer: identical to the faithful model
    for m in (faithful, fast):
        m.eval()
    items = slice(faithful.n_users, faithful.n_users + faithful.n_items)
    with torch.no_grad():
        torch.testing.assert_close(faithful.forward()[1], fast.forward()[1])
        residual = {m: getattr(fast, f"fused_residual_{m}").clone() for m in fast.modalities}
        own = faithful.view_inputs()["text"][items]
    torch.testing.assert_close(residual["text"], _fused(faithful)["text"][items] - own)
    # a training forward recomputes round(0.25 * n_items) rows with gradient; every other row is its
    # current own embedding + its cached residual
    fast.train()
    for module in list(fast.transformer.modules()) + list(fast.propagation.modules()):
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():  # move the ID embeddings: stale rows must follow them, not the cache
        fast.entity_embedding.weight.add_(0.1)
    inputs = fast.view_inputs()
    fused = fast.fused_items(inputs)
    k = round(0.25 * fast.n_items)
    ffn = fast.transformer.layers[0].ffn["text"][0].weight  # applied to every computed query row
    probe = torch.randn(16, generator=torch.Generator().manual_seed(0))  # (a plain sum of a LayerNorm output has no gradient)
    rows_with_grad = torch.zeros(fast.n_items, dtype=torch.bool)
    for i in range(fast.n_items):  # test-only loop: which rows depend on the transformer
        g = torch.autograd.grad((fused["text"][i] * probe).sum(), ffn, retain_graph=True, allow_unused=True)[0]
        rows_with_grad[i] = g is not None and g.abs().sum() > 0
    assert int(rows_with_grad.sum()) == k
    stale = ~rows_with_grad
    torch.testing.assert_close(fused["text"][stale], (inputs["text"][items] + residual["text"])[stale])
    # a stale row still trains its item's ID embedding
    i = int(torch.nonzero(stale)[0])
    g = torch.autograd.grad(fused["text"][i].sum(), fast.entity_embedding.weight, retain_graph=True)[0]
    assert g[i].abs().sum() > 0
    # the fresh rows replaced their cache entries by their new residual
    torch.testing.assert_close(fast.fused_residual_text[rows_with_grad],
                               (fused["text"] - inputs["text"][items])[rows_with_grad].detach())
    torch.testing.assert_close(fast.fused_residual_text[stale], residual["text"][stale])
    loss = fast.calculate_loss(bpr_batch(fast))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("schedule", ["alternating", "joint"])
def test_kg_schedules_train_and_log_both_losses(tiny_root, schedule):
    from recbole_mkg.quick_start import run_recbole_mkg

    result = run_recbole_mkg("MultiKG4Rec", "mkg-tiny", config_dict=tiny_config(tiny_root, kg_schedule=schedule),
                             saved=False)
    assert 0 <= result["test_result"]["ndcg@20"] <= 1


def test_joint_schedule_sums_bpr_and_transr(tiny_root):
    from recbole_mkg.trainer import MultiKG4RecTrainer

    model, _ = build(tiny_root, kg_schedule="joint")
    config = Config(model="MultiKG4Rec", dataset="mkg-tiny", config_dict=tiny_config(tiny_root, kg_schedule="joint"))
    trainer = MultiKG4RecTrainer(config, model)
    b = bpr_batch(model)
    b.update(Interaction({
        model.HEAD_ENTITY_ID: torch.tensor([1, 2]), model.RELATION_ID: torch.tensor([1, 2]),
        model.TAIL_ENTITY_ID: torch.tensor([4, 5]), model.NEG_TAIL_ENTITY_ID: torch.tensor([7, 8]),
    }))
    model.eval()
    cf, kg = trainer._joint_loss(b)
    torch.testing.assert_close(cf, model.calculate_loss(b))
    torch.testing.assert_close(kg, model.calculate_kg_loss(b))
    with pytest.raises(ValueError, match="kg_schedule"):
        MultiKG4RecTrainer(Config(model="MultiKG4Rec", dataset="mkg-tiny",
                                  config_dict=tiny_config(tiny_root, kg_schedule="sometimes")), model)


def test_fusion_compile_runs_the_same_transformer_through_torch_compile(tiny_root, monkeypatch):
    """``fusion_compile``: the transformer is called through torch.compile with the configured mode; the
    function, the parameters and the checkpoint keys are the eager model's. (Dynamo traces the real
    transformer; Inductor's code generation is replaced by the eager backend to keep the test fast: its
    own correctness is benchmarks/bench_fusion.py's difference column.)"""
    compile_calls = []
    real_compile = torch.compile

    def traced(module, mode=None, dynamic=None, **kwargs):
        compile_calls.append((module, mode, dynamic))
        return real_compile(module, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", traced)
    no_dropout = {"hidden_dropout": 0.0, "mess_dropout": 0.0}  # so that two training passes compare
    eager, _ = build(tiny_root, **no_dropout)
    compiled, _ = build(tiny_root, fusion_compile="reduce-overhead", **no_dropout)
    assert compile_calls == [(compiled.transformer, "reduce-overhead", None)]
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # nothing of the wrapper is saved
    compiled.load_state_dict(eager.state_dict())
    assert compiled.fusion_transformer is not compiled.transformer and eager.fusion_transformer is eager.transformer
    for m in (eager, compiled):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled.forward()[1], eager.forward()[1])
    # training: the loss and the gradients reach the transformer's parameters through the compiled call
    for m in (eager, compiled):
        m.train()
    batch = bpr_batch(eager)
    losses = []
    for m in (eager, compiled):
        m.zero_grad()
        loss = m.calculate_loss(batch)
        loss = loss[0] if isinstance(loss, tuple) else loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    ffn = [m.transformer.layers[0].ffn["text"][0].weight.grad for m in (eager, compiled)]
    assert ffn[1] is not None and ffn[1].abs().sum() > 0
    torch.testing.assert_close(ffn[0], ffn[1])


def test_fusion_compile_with_neighbour_sampling_compiles_for_dynamic_shapes(tiny_root, monkeypatch):
    """Sampled batches hold a varying number of items: the transformer is compiled with dynamic shapes and
    a sampled training pass gives the eager model's loss and gradients (the same sampled field)."""
    compile_calls, compiled_calls = [], []
    real_compile = torch.compile

    def traced(module, mode=None, dynamic=None, **kwargs):
        compile_calls.append(dynamic)
        function = real_compile(module, backend="eager", dynamic=dynamic)
        return lambda *args, **kw: (compiled_calls.append(1), function(*args, **kw))[1]

    monkeypatch.setattr(torch, "compile", traced)
    settings = {"hidden_dropout": 0.0, "mess_dropout": 0.0, "neighbour_sample_sizes": [3, 2]}
    eager, _ = build(tiny_root, **settings)
    compiled, _ = build(tiny_root, fusion_compile="default", **settings)
    assert compile_calls == [True]
    compiled.load_state_dict(eager.state_dict())
    losses, grads = [], []
    for m in (eager, compiled):
        m.train()
        for users in (8, 12):  # two batches: two field sizes, through the one compiled function
            torch.manual_seed(7)  # the same sampled neighbours for both models
            m.zero_grad()
            loss = m.calculate_loss(bpr_batch(m, n=users))
            loss = loss[0] if isinstance(loss, tuple) else loss
            loss.backward()
            losses.append(loss.detach())
            grads.append(m.transformer.layers[0].ffn["text"][0].weight.grad.clone())
    assert len(compiled_calls) == 2  # the sampled batches went through the compiled function
    torch.testing.assert_close(losses[:2], losses[2:])
    torch.testing.assert_close(grads[:2], grads[2:])
    assert grads[2].abs().sum() > 0


def test_fusion_compile_bad_value_names_the_modes(tiny_root):
    with pytest.raises(ValueError, match="config 'fusion_compile' must be one of default, reduce-overhead"):
        build(tiny_root, fusion_compile="fast")
