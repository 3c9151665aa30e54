"""CrossGMMI-DUKGLR: shapes, gradients, fusion / JK switches, dynamic negatives, pre-training on two KGs,
pre-trained weights loaded by fine-tuning, full-sort == per-pair, config errors."""
import os

import pandas as pd
import pytest
import torch

from recbole_mkg.model.contrastive import DynamicNegativeSampler
from recbole_mkg.model.knowledge_aware_recommender import CrossGMMI
from recbole_mkg.trainer import CrossGMMITrainer
from recbole_mkg.utils import get_model, get_trainer
from tests.conftest import assert_full_sort_matches_predict, assert_gradients_reach, bpr_batch, build_model

FAST = dict(embedding_size=16, n_heads=2, gat_heads=2, n_modal_tokens=2, pretrain_epochs=1, pretrain_batch_size=64,
            pretrain_neg_samples=16, dns_candidates=8)


def build(root, **overrides):
    return build_model(root, "CrossGMMI", **dict(FAST, **overrides))



@pytest.fixture(scope="module")
def built(tiny_root):
    return build(tiny_root)


@pytest.fixture(scope="module")
def second_kg(tiny_root):
    """A second KG of the same items: other entity tokens, a third of the triples dropped, one extra relation."""
    folder = os.path.join(str(tiny_root), "mkg-tiny-b")
    os.makedirs(folder, exist_ok=True)
    src = os.path.join(str(tiny_root), "mkg-tiny", "mkg-tiny")
    kg = pd.read_csv(src + ".kg", sep="\t", dtype=str)
    kg = kg.iloc[[i for i in range(len(kg)) if i % 3]].copy()
    kg.iloc[:, 0] = "B:" + kg.iloc[:, 0]
    kg.iloc[:, 2] = "B:" + kg.iloc[:, 2]
    kg.to_csv(os.path.join(folder, "mkg-tiny-b.kg"), sep="\t", index=False)
    link = pd.read_csv(src + ".link", sep="\t", dtype=str)
    link.iloc[:, 1] = "B:" + link.iloc[:, 1]
    link.to_csv(os.path.join(folder, "mkg-tiny-b.link"), sep="\t", index=False)
    return folder


def test_alias_and_trainer_lookup():
    assert get_model("CrossGMMI-DUKGLR") is CrossGMMI
    assert get_trainer(None, "CrossGMMI-DUKGLR") is CrossGMMITrainer


def test_shapes_and_jk_modes(tiny_root, built):
    model, _, _ = built
    user, entity = model.forward()
    assert user.shape == (model.n_users, 16 * 3) and entity.shape == (model.n_entities, 16 * 3)  # cat: (L+1) d
    for mode, width in (("max", 16), ("lstm", 16), ("last", 16)):
        m, _, _ = build(tiny_root, jk_mode=mode)
        assert m.forward()[0].shape == (m.n_users, width)
    m, _, _ = build(tiny_root, gat_layers=3)
    assert m.forward()[1].shape[1] == 16 * 4


def test_gradients_reach_every_part(built):
    model, _, _ = built
    model.train()
    assert_gradients_reach(model, model.calculate_loss(bpr_batch(model)), [
        "user_embedding.weight", "entity_embedding.weight", "relation_embedding.weight",
        "encoder.fusion.projection.text.weight", "encoder.fusion.projection.visual.weight",
        "encoder.fusion.attention.text.in_proj_weight", "encoder.gat.layers.0.lin.weight",
        "encoder.gat.layers.1.att_message"])


def test_full_sort_equals_per_pair_predict(built):
    model, _, _ = built
    assert_full_sort_matches_predict(model, (1, 5, 9))


def _fused(model):
    model.eval()
    with torch.no_grad():
        return model.encoder.fusion(*model.modal_inputs())


@pytest.mark.parametrize("fusion", ["text_to_visual", "bidirectional", "concat"])
def test_fusion_switch_and_masks(tiny_root, fusion):
    model, _, _ = build(tiny_root, fusion=fusion)
    f = model.encoder.fusion
    assert hasattr(f, "attention") == (fusion != "concat")
    assert (fusion == "bidirectional") == ("visual" in getattr(f, "attention", {}))
    fused = _fused(model)
    none = ~(model.mask_text | model.mask_visual)
    assert none.any() and torch.all(fused[none] == 0)  # no modality: no invented vector
    both = model.mask_text & model.mask_visual
    base = fused.clone()
    with torch.no_grad():
        model.features_visual.mul_(-3.0)
    changed = _fused(model)
    assert not torch.allclose(changed[both], base[both])  # every mode uses the image of text+image entities
    only_text = model.mask_text & ~model.mask_visual
    torch.testing.assert_close(changed[only_text], base[only_text])  # a masked image is never read


def test_cross_attention_differs_from_concat(tiny_root):
    a, _, _ = build(tiny_root, fusion="text_to_visual")
    b, _, _ = build(tiny_root, fusion="concat")
    assert sum(p.numel() for p in a.encoder.fusion.parameters()) != sum(p.numel() for p in b.encoder.fusion.parameters())


def test_dynamic_negatives_never_positive():
    torch.manual_seed(0)
    n_users, n_items = 6, 12
    users = torch.arange(1, n_users).repeat_interleave(8)
    items = torch.randint(1, n_items, (len(users),))
    sampler = DynamicNegativeSampler(n_items, users, items, n_candidates=20, hard_ratio=1.0)
    positives = set(zip(users.tolist(), items.tolist()))
    user_repr = torch.randn(n_users, 4)
    item_repr = torch.randn(n_items, 4)
    item_repr[sorted({i for _, i in positives})] += 10 * user_repr[1:].mean(0)  # positives score highest
    q = torch.arange(1, n_users).repeat(200)
    uniform = torch.zeros_like(q)  # stand-in marking "fell back to the uniform negative"
    negatives = sampler.sample(q, uniform, user_repr, item_repr)
    hard = negatives != 0
    assert hard.float().mean() > 0.5
    assert not any((u, i) in positives for u, i in zip(q[hard].tolist(), negatives[hard].tolist()))
    # the hard negative is the best-scoring non-positive among the candidates: it beats a random non-positive
    assert sampler.is_positive(torch.tensor([1]), torch.tensor([[items[0].item()]])).item()


def test_dynamic_negatives_mix_ratio():
    sampler = DynamicNegativeSampler(50, torch.tensor([1]), torch.tensor([3]), n_candidates=4, hard_ratio=0.0)
    q = torch.ones(10, dtype=torch.long)
    uniform = torch.full((10,), 7)
    assert torch.equal(sampler.sample(q, uniform, torch.randn(2, 3), torch.randn(50, 3)), uniform)


def test_infonce_decreases_on_two_kgs_and_alignment_is_reported(tiny_root, second_kg):
    model, config, (train, valid, _) = build(tiny_root, pretrain_second_kg=second_kg, pretrain_epochs=6,
                                             pretrain_learning_rate=0.01, alignment_test_ratio=0.3)
    trainer = CrossGMMITrainer(config, model)
    path = trainer.pretrain(train, verbose=False)
    losses = trainer.pretrain_losses
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.9, losses
    assert set(trainer.alignment_result) == {"hits@1", "hits@10", "mrr"}
    state = torch.load(path, weights_only=True)
    assert state["alignment"] == trainer.alignment_result and state["entity_tokens"][1:] == model.entity_tokens[1:]


def test_single_kg_pretraining_uses_two_views(tiny_root, caplog):
    model, config, _ = build(tiny_root)
    task, pairs, test = model.build_pretrain_task(config, __import__("logging").getLogger("t"))
    assert task.views and test is None and torch.equal(pairs[:, 0], pairs[:, 1])
    with pytest.raises(ValueError, match="pretrain_edge_drop"):
        build_task = model.build_pretrain_task
        config["pretrain_edge_drop"], config["pretrain_feature_mask"] = 0.0, 0.0
        build_task(config)


def test_finetuning_loads_pretrained_weights_by_token(tiny_root, tmp_path):
    source, config, _ = build(tiny_root, seed=1)
    path = source.save_pretrained(str(tmp_path / "pre.pth"))
    target, config2, (train, valid, _) = build(tiny_root, seed=2, train_stage="finetune", pretrained_path=path,
                                               epochs=1)
    assert not torch.equal(target.entity_embedding.weight, source.entity_embedding.weight)
    trainer = CrossGMMITrainer(config2, target)
    with torch.no_grad():  # what fine-tuning starts from (fit then trains one epoch)
        report = target.load_pretrained(path)
    assert report["entity_rows_matched"] == target.n_entities - 1 and report["encoder_tensors_loaded"] == report["encoder_tensors"]
    torch.testing.assert_close(target.entity_embedding.weight[1:], source.entity_embedding.weight[1:])
    for k, v in source.encoder.state_dict().items():
        torch.testing.assert_close(target.encoder.state_dict()[k], v)
    # through the trainer: fit() loads the file named by pretrained_path and reports the rows it matched
    target2, config3, (train, valid, _) = build(tiny_root, seed=3, train_stage="finetune", pretrained_path=path)
    trainer = CrossGMMITrainer(config3, target2.to(config3["device"]))  # batches go to config's device
    trainer.fit(train, valid, saved=False, verbose=False)
    assert trainer.pretrained_report["entity_rows_matched"] == target2.n_entities - 1


def test_pretrained_rows_are_matched_by_token_not_by_id(tiny_root, tmp_path, built):
    model, _, _ = built
    state = model.pretrained_state()
    order = list(range(1, len(state["entity_tokens"])))[::-1]  # another dataset: other ids for the same tokens
    state["entity_tokens"] = ["[PAD]"] + [state["entity_tokens"][i] for i in order][:-5] + ["unknown"] * 5
    state["entity_embedding"] = torch.cat([state["entity_embedding"][:1], state["entity_embedding"][order]])
    path = str(tmp_path / "shuffled.pth")
    torch.save(state, path)
    target, _, _ = build(tiny_root, seed=5)
    report = target.load_pretrained(path)
    assert report["entity_rows_matched"] == target.n_entities - 1 - 5
    token = state["entity_tokens"][1]
    torch.testing.assert_close(target.entity_embedding.weight[target.entity_tokens.index(token)],
                               model.entity_embedding.weight[model.entity_tokens.index(token)])
    # a damaged file (here: cut in half in transfer) is named as such
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"shuffled\.pth is not a readable PyTorch checkpoint.*truncated or damaged"):
        target.load_pretrained(path)


def test_bce_and_no_modalities(tiny_root):
    model, _, _ = build(tiny_root, rec_loss="bce", modalities=[])
    assert model.encoder.fusion is None
    loss = model.calculate_loss(bpr_batch(model))
    assert torch.isfinite(loss)


def test_invalid_config_values(tiny_root):
    for key, value, match in [("fusion", "sum", "fusion"), ("jk_mode", "mean", "jk_mode"),
                              ("train_stage", "both", "train_stage"), ("rec_loss", "hinge", "rec_loss"),
                              ("aug_edge_drop", 1.5, "aug_edge_drop"), ("gat_heads", 3, "gat_heads"),
                              ("hard_neg_ratio", 2, "hard_neg_ratio")]:
        with pytest.raises(ValueError, match=match):
            build(tiny_root, **{key: value})
    model, config, _ = build(tiny_root, pretrain_second_kg="/nonexistent/kg")
    with pytest.raises(FileNotFoundError, match="pretrain_second_kg"):
        model.build_pretrain_task(config)


def _reference_gat_layer(layer, x, relation_embedding, edges):
    """The layer's equations edge by edge, as written in the module docstring ([E, H, d_head] products)."""
    from torch_geometric.utils import softmax as segment_softmax

    head, tail, relation = edges
    n = x.size(0)
    z = layer.lin(x).view(n, layer.n_heads, layer.d_head)
    rel = layer.lin_relation(relation_embedding).view(-1, layer.n_heads, layer.d_head)
    message = z[tail] + rel[relation]
    logits = (z[head] * layer.att_head).sum(-1) + (message * layer.att_message).sum(-1)
    alpha = segment_softmax(torch.nn.functional.leaky_relu(logits, layer.negative_slope), head, num_nodes=n)
    out = torch.zeros_like(z).index_add_(0, head, alpha.unsqueeze(-1) * message)
    return torch.nn.functional.elu(out.view(n, -1)) + x


@pytest.mark.parametrize("message_sum", ["sparse", "edgewise"])
@pytest.mark.parametrize("n_rel,group_relations", [(5, None), (300, None), (5, False), (300, True)])
def test_gat_layer_equals_its_edgewise_equations(n_rel, group_relations, message_sum):
    """The per-node scoring of the attention logits, the CSR products of the sparse aggregation and the
    relation term summed per (head, relation) are re-associations, not a change of the model. By size (None),
    5 relations group the relation term (n * R <= E * d_head) and 300 sum it edge by edge; forced either way,
    the same values. The random edges repeat some (head, tail) pairs and leave some nodes without edges."""
    from recbole_mkg.model.graph_encoder import RelationalGATLayer

    torch.manual_seed(0)
    layer = RelationalGATLayer(16, n_heads=4).eval()
    n, n_edges = 30, 200
    edges = (torch.randint(0, n - 3, (n_edges,)), torch.randint(0, n, (n_edges,)), torch.randint(0, n_rel, (n_edges,)))
    assert (edges[0] * n + edges[1]).unique().numel() < n_edges  # parallel edges; nodes n-3.. receive nothing
    x = torch.randn(n, 16, requires_grad=True)
    rel = torch.randn(n_rel, 16, requires_grad=True)
    got = layer(x, rel, edges, message_sum=message_sum, group_relations=group_relations)
    grads = torch.autograd.grad(got.square().sum(), [x, rel, layer.att_head, layer.att_message, layer.lin.weight])
    want = _reference_gat_layer(layer, x, rel, edges)
    want_grads = torch.autograd.grad(want.square().sum(), [x, rel, layer.att_head, layer.att_message, layer.lin.weight])
    torch.testing.assert_close(got, want)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the sparse sums' GPU kernels are checked where there is one"))])
def test_sparse_edge_sum_gradients_and_edge_cases(device):
    """The CSR aggregation's hand-written backward (CSR of the transpose for the nodes, SDDMM for the
    weights) against finite differences in float64, on the CPU and (where there is one) on CUDA, whose
    sparse kernels differ; a whole GAT layer on the device against the edge-wise equations; an empty edge
    set gives zeros; unknown options fail."""
    from recbole_mkg.model.edge_aggregation import SortedEdges, _EdgeWeightedSum
    from recbole_mkg.model.graph_encoder import RelationalGATLayer

    torch.manual_seed(1)
    n, n_edges, heads = 7, 25, 2
    edges = SortedEdges((torch.randint(0, n, (n_edges,), device=device), torch.randint(0, n, (n_edges,), device=device),
                         torch.zeros(n_edges, dtype=torch.long, device=device)), n)
    weight = torch.rand(n_edges, heads, dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(n, heads, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, v: _EdgeWeightedSum.apply(w, v, edges), (weight, x))
    want = torch.zeros_like(x).index_add_(0, edges.head, weight.unsqueeze(-1) * x[edges.tail])
    torch.testing.assert_close(_EdgeWeightedSum.apply(weight, x, edges), want)

    layer = RelationalGATLayer(16, n_heads=4).to(device).eval()
    graph = tuple(t.to(device) for t in (torch.randint(0, 27, (200,)), torch.randint(0, 30, (200,)), torch.randint(0, 5, (200,))))
    x = torch.randn(30, 16, device=device, requires_grad=True)
    rel = torch.randn(5, 16, device=device, requires_grad=True)
    got, want = layer(x, rel, graph), _reference_gat_layer(layer, x, rel, graph)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got.square().sum(), [x, rel]), torch.autograd.grad(want.square().sum(), [x, rel])):
        torch.testing.assert_close(g, w)

    layer = RelationalGATLayer(8, n_heads=2).to(device)
    x = torch.randn(5, 8, device=device, requires_grad=True)
    none = (torch.zeros(0, dtype=torch.long, device=device),) * 3
    out = layer(x, torch.randn(3, 8, device=device), none)
    torch.testing.assert_close(out, x)  # ELU(0) + x: no messages
    out.sum().backward()
    with pytest.raises(ValueError, match="message_sum"):
        layer(x, torch.randn(3, 8, device=device), none, message_sum="dense")


@pytest.mark.parametrize("fusion", ["text_to_visual", "bidirectional", "concat"])
def test_node_inputs_fuse_only_entities_with_a_modality(tiny_root, fusion):
    """Fusion over the rows with a modality alone equals fusing every entity (the rest get exact zeros)."""
    model, _, _ = build(tiny_root, fusion=fusion)
    model.eval()
    features, masks = model.modal_inputs()
    rows = model.modal_rows
    assert 0 < rows.numel() < model.n_entities  # the tiny data has entities without any modality
    with torch.no_grad():
        got = model.encoder.node_inputs(model.entity_embedding.weight, features, masks, 0.0, rows)
        want = model.entity_embedding.weight + model.encoder.fusion(features, masks)
        computed = model.encoder.node_inputs(model.entity_embedding.weight, features, masks)  # rows found itself
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(computed, want)
    no_modality = torch.ones(model.n_entities, dtype=torch.bool)
    no_modality[rows] = False
    assert torch.equal(got[no_modality], model.entity_embedding.weight[no_modality])
