"""MKGAT: modal nodes and edges, attention as a segment softmax, shapes, gradients, type-preserving
corruption, ablation switches, full-sort == per-pair, config errors."""
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_mkg.model.knowledge_aware_recommender.mkgat import corrupt_tails
from recbole_mkg.trainer import MKGATTrainer
from recbole_mkg.utils import get_trainer
from tests.conftest import assert_full_sort_matches_predict, assert_gradients_reach, bpr_batch, build_model


def build(root, **overrides):
    return build_model(root, "MKGAT", **overrides)


@pytest.fixture(scope="module")
def built(tiny_root):
    return build(tiny_root)


def kg_batch(model):
    return Interaction({
        model.HEAD_ENTITY_ID: torch.tensor([1, 2, 3, 4]), model.RELATION_ID: torch.tensor([1, 2, 1, 3]),
        model.TAIL_ENTITY_ID: torch.tensor([5, 6, 7, 8]), model.NEG_TAIL_ENTITY_ID: torch.tensor([9, 9, 9, 9]),
    })


def test_modal_nodes_only_for_entities_that_have_the_modality(built):
    model, _, (train, _, _) = built
    dataset = train._dataset
    n_v, n_t = int(dataset.modal_masks["visual"].sum()), int(dataset.modal_masks["text"].sum())
    assert model.n_nodes == model.n_users + model.n_entities + n_v + n_t
    has_image = model.modal_relation == 2 * model.n_relations
    owners = model.modal_head[has_image] - model.n_users
    assert torch.equal(owners, torch.nonzero(dataset.modal_masks["visual"]).flatten())
    torch.testing.assert_close(model.features_visual, dataset.modal_features["visual"][owners])


def test_shapes_and_gradients(built):
    model, _, _ = built
    user, entity = model.forward()
    assert user.shape == (model.n_users, 16 + 16 + 8) and entity.shape == (model.n_entities, 40)
    model.train()
    assert_gradients_reach(model, model.calculate_loss(bpr_batch(model)), [
        "user_embedding.weight", "entity_embedding.weight", "projection.visual.weight",
        "projection.text.weight", "layers.0.w1_relation.weight", "layers.0.w2.weight", "layers.1.w3.weight"])
    params = dict(model.named_parameters())
    model.zero_grad()
    loss = model.calculate_kg_loss(kg_batch(model))
    loss.backward()
    assert torch.isfinite(loss) and params["kg_relation_embedding.weight"].grad.abs().sum() > 0
    assert params["projection.text.weight"].grad.abs().sum() > 0  # modal triples are in the KG batch


def test_attention_is_a_softmax_over_each_heads_triples(built):
    model, _, _ = built
    layer = model.layers[0]
    captured = {}
    from recbole_mkg.model.knowledge_aware_recommender import mkgat as module
    original = module.segment_softmax

    def spy(src, index, num_nodes):
        captured["pi"] = out = original(src, index, num_nodes=num_nodes)
        return out
    module.segment_softmax = spy
    try:
        edges = model.sorted_edges()  # what propagate() passes: pi comes in its edge order
        layer(model.node_inputs(), model.relation_embedding.weight, edges)
    finally:
        module.segment_softmax = original
    assert torch.equal(torch.sort(edges.head).values, torch.sort(model.edge_head).values)
    sums = torch.zeros(model.n_nodes).index_add_(0, edges.head, captured["pi"].detach())
    heads = torch.unique(model.edge_head)
    torch.testing.assert_close(sums[heads], torch.ones(len(heads)))


def test_type_preserving_corruption(built):
    model, _, _ = built
    torch.manual_seed(0)
    tails = torch.cat([torch.randint(model.n_users + 1, model.n_structural, (300,)),
                       model.modal_tail[torch.randint(0, model.modal_tail.numel(), (300,))]])
    for _ in range(5):
        neg = corrupt_tails(tails, model.node_type, model.type_start, model.type_count)
        assert torch.equal(model.node_type[neg], model.node_type[tails])  # image -> image, text -> text
        assert not torch.any(neg == tails)
        assert neg.min() >= model.n_users + 1 and neg.max() < model.n_nodes
    image_type = model.node_type[model.modal_tail[0]]
    seen = corrupt_tails(model.modal_tail[:1].repeat(2000), model.node_type, model.type_start, model.type_count)
    assert len(torch.unique(seen)) > 0.5 * int(model.type_count[image_type])  # spread over the whole type


def test_corruption_small_types():
    node_type = torch.tensor([-1, 0, 0, 1, 2, 2, 2])
    start, count = torch.tensor([1, 3, 4]), torch.tensor([2, 1, 3])
    tails = torch.tensor([1, 2, 4, 5, 6, 3])
    neg = corrupt_tails(tails, node_type, start, count)
    assert torch.equal(node_type[neg], node_type[tails])
    assert torch.all(neg[:5] != tails[:5]) and neg[5] == 3  # a type with a single node can only map to itself


def test_full_sort_equals_per_pair_predict(built):
    model, _, _ = built
    assert_full_sort_matches_predict(model, (1, 4, 7))


@pytest.mark.parametrize("modalities", [[], ["text"], ["visual"]])
def test_modality_ablations(tiny_root, modalities):
    model, _, _ = build(tiny_root, modalities=modalities)
    assert list(model.projection) == modalities
    assert int(model.n_edge_relations) == 2 * model.n_relations + len(modalities)
    assert torch.isfinite(model.calculate_kg_loss(kg_batch(model)))


def test_concat_aggregation(tiny_root):
    model, _, _ = build(tiny_root, aggregation="concat")
    assert hasattr(model.layers[0], "w4") and not hasattr(model.layers[0], "w3")
    assert model.forward()[0].shape[1] == 40


def test_trainer_alternates_and_logs_both_losses(tiny_root):
    model, config, (train, valid, _) = build(tiny_root)
    assert get_trainer(config["MODEL_TYPE"], "MKGAT") is MKGATTrainer
    trainer = MKGATTrainer(config, model.to(config["device"]))  # the trainer moves batches to config's device
    losses = trainer._train_epoch(train, 0)
    assert isinstance(losses, tuple) and len(losses) == 2 and all(v > 0 for v in losses)


def test_invalid_config_values(tiny_root):
    with pytest.raises(ValueError, match="aggregation"):
        build(tiny_root, aggregation="mean")
    with pytest.raises(ValueError, match="kg_margin"):
        build(tiny_root, kg_margin=0)
    with pytest.raises(ValueError, match="modalities"):
        build(tiny_root, modalities=["audio"])


@pytest.mark.parametrize("message_sum", ["sparse", "edgewise"])
@pytest.mark.parametrize("aggregation", ["add", "concat"])
def test_attention_layer_equals_its_edgewise_equations(aggregation, message_sum):
    """Scoring W_2 e(h,r,t) per node and relation, and summing the messages' three parts apart (the tails as
    a CSR product), are re-associations of the paper's per-edge formula. The random edges repeat some
    (head, tail) pairs and leave the last nodes without edges."""
    import torch.nn.functional as F
    from torch_geometric.utils import softmax as segment_softmax

    from recbole_mkg.model.knowledge_aware_recommender.mkgat import MKGATLayer

    torch.manual_seed(0)
    layer = MKGATLayer(8, 6, 5, aggregation, dropout=0.0)
    n, n_rel, n_edges = 25, 4, 150
    head, tail, rel = torch.randint(0, n - 3, (n_edges,)), torch.randint(0, n, (n_edges,)), torch.randint(0, n_rel, (n_edges,))
    assert (head * n + tail).unique().numel() < n_edges
    x = torch.randn(n, 8, requires_grad=True)
    r = torch.randn(n_rel, 5, requires_grad=True)
    got = layer(x, r, (head, tail, rel), message_sum=message_sum)
    e = layer.w1_head(x)[head] + layer.w1_relation(r)[rel] + layer.w1_tail(x)[tail]  # W_1 [e_h || e_r || e_t]
    pi = segment_softmax(F.leaky_relu(layer.w2(e).squeeze(-1)), head, num_nodes=n)
    neighbourhood = x.new_zeros(n, 6).index_add_(0, head, pi.unsqueeze(1) * e)
    out = layer.w3(x) + neighbourhood if aggregation == "add" else layer.w4(torch.cat([x, neighbourhood], 1))
    want = F.leaky_relu(out)
    torch.testing.assert_close(got, want)
    params = [x, r, layer.w2.weight, layer.w1_tail.weight, layer.w1_head.weight, layer.w1_relation.weight]
    for g, w in zip(torch.autograd.grad(got.square().sum(), params), torch.autograd.grad(want.square().sum(), params)):
        torch.testing.assert_close(g, w)
    with pytest.raises(ValueError, match="message_sum"):
        layer(x, r, (head, tail, rel), message_sum="dense")
