"""Mini-batched propagation with neighbour sampling: exact when nothing is dropped, unbiased when sampled."""
import pytest
import torch

from recbole_mkg.model.layers import PropagationMatrix
from recbole_mkg.model.neighbour_sampling import check_sample_sizes, sample_hops
from tests.conftest import bpr_batch
from tests.test_models import build


def _random_matrix(n=40, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(n, n, generator=g) * (torch.rand(n, n, generator=g) < density)
    return dense, PropagationMatrix(dense.to_sparse_coo())


def test_hops_keep_every_edge_of_small_degrees_and_k_of_large_ones():
    dense, matrix = _random_matrix()
    targets = torch.tensor([3, 7, 11])
    torch.manual_seed(0)
    hops = sample_hops(matrix, targets, [4, -1])
    assert torch.equal(hops.nodes[:3], targets) and hops.n_targets == 3
    (n_dst, n_src, dst, src, edge, scale), second = hops.hops
    degree = (dense[targets] > 0).sum(1)
    per_row = torch.bincount(dst, minlength=3)
    torch.testing.assert_close(per_row, torch.minimum(degree, torch.tensor(4)))
    # the sampled sources are real neighbours, with the deg/k weight for the sampled rows
    assert bool((dense[targets[dst], hops.nodes[src]] > 0).all())
    torch.testing.assert_close(scale, torch.where(degree[dst] > 4, degree[dst] / 4.0, torch.ones(len(dst))))
    # hop 2 (-1): every edge of every node of hop 1's set
    n_dst2, n_src2, dst2, src2, _, _ = second
    assert n_dst2 == n_src and len(dst2) == int((dense[hops.nodes[:n_src]] > 0).sum())


def test_sampled_block_is_an_unbiased_estimate_of_the_full_product():
    # degrees about 9 with k = 3: the mean of 4000 draws has a std of about 0.05 per entry, while a
    # missing deg/k weight would shrink the sampled rows' entries (of size about 1.7) about 3x
    dense, matrix = _random_matrix(n=60, density=0.15)
    targets = torch.arange(0, 60, 3)
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    draws = 4000
    total = torch.zeros(len(targets), 5)
    for _ in range(draws):  # test-only loop over independent draws
        hops = sample_hops(matrix, targets, [3])
        block = hops.blocks(matrix.csr.values())[0]
        total += block @ x[hops.nodes]
    exact = dense[targets] @ x
    one = sample_hops(matrix, targets, [3])
    assert not torch.allclose(one.blocks(matrix.csr.values())[0] @ x[one.nodes], exact, atol=1e-3)  # it samples
    assert int(((dense[targets] > 0).sum(1) > 3).sum()) >= 15  # most rows are sampled, not exact
    torch.testing.assert_close(total / draws, exact, atol=0.25, rtol=0.0)


@pytest.mark.parametrize("model, options", [("KGAT", {}), ("MultiKG4Rec", {}),
                                            ("MultiKG4Rec", {"fusion_output": "add"})])
def test_exact_minibatch_equals_the_full_graph_rows(tiny_root, model, options):
    m, _ = build(tiny_root, model=model, neighbour_sample_sizes=[-1, -1], **options)
    m.eval()  # no dropout: both passes are deterministic
    with torch.no_grad():
        users, entities = m.forward()
        full = torch.cat([users, entities])
        targets = torch.tensor([0, 2, m.n_users + 1, m.n_users + 4, m.n_users + m.n_items + 1])
        torch.testing.assert_close(m.forward_sampled(targets), full[targets])


@pytest.mark.parametrize("model", ["KGAT", "MultiKG4Rec"])
def test_sampled_training_trains_every_part_and_evaluates_full_graph(tiny_root, model):
    m, _ = build(tiny_root, model=model, neighbour_sample_sizes=[2, 2])
    m.train()
    batch = bpr_batch(m)
    loss = m.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert grads["user_embedding.weight"].abs().sum() > 0
    assert grads["entity_embedding.weight"].abs().sum() > 0
    layer = [n for n in grads if n.endswith("aggregator_layers.0.W1.weight")]
    assert layer and all(grads[n].abs().sum() > 0 for n in layer)
    if model == "MultiKG4Rec":
        assert grads["transformer.layers.0.ffn.text.0.weight"].abs().sum() > 0
    # evaluation: the full graph (the same as the model without sampling)
    full, _ = build(tiny_root, model=model)
    full.load_state_dict(m.state_dict())
    m.eval(), full.eval()
    users = batch[m.USER_ID][:4]
    with torch.no_grad():
        from recbole.data.interaction import Interaction

        inter = Interaction({m.USER_ID: users})
        torch.testing.assert_close(m.full_sort_predict(inter), full.full_sort_predict(inter))


def test_invalid_sample_sizes():
    assert check_sample_sizes(None, 3) is None
    assert check_sample_sizes([5, -1, 2], 3) == [5, -1, 2]
    for bad in ([5, 5], [0, 1, 1], [1.5, 1, 1], "10", [True, 1, 1], [-2, 1, 1]):
        with pytest.raises(ValueError, match="neighbour_sample_sizes"):
            check_sample_sizes(bad, 3)


def test_sampling_and_fusion_sample_ratio_exclude_each_other(tiny_root):
    with pytest.raises(ValueError, match="exclude each other"):
        build(tiny_root, neighbour_sample_sizes=[2, 2], fusion_sample_ratio=0.5)
    with pytest.raises(ValueError, match="neighbour_sample_sizes"):
        build(tiny_root, model="KGAT", neighbour_sample_sizes=[2])
