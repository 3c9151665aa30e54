"""The sorted edge set of the attention layers' sparse sums: subsets (edge dropout) without a new sort, the
per-module cache, id checks; and the models' training forward with the cached set equal to sorting per call."""
import pytest
import torch

from recbole_mkg.model.edge_aggregation import SortedEdges, cached_sorted_edges, edge_weighted_sum
from recbole_mkg.model.graph_encoder import drop_edges


def random_edges(n_nodes, n_edges, n_relations=3, seed=0):
    """Edges with many parallel (head, tail) pairs and nodes without edges, so ties in the sort are exercised."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, n_nodes - 2, (n_edges,), generator=g), torch.randint(0, n_nodes // 2, (n_edges,), generator=g),
            torch.randint(0, n_relations, (n_edges,), generator=g))


def dense(edges, values):
    """A[head, tail] += value over the edges (in the order of ``values``)."""
    n = edges.n_nodes
    return torch.zeros(n * n, dtype=values.dtype).index_add_(0, edges.head * n + edges.tail, values).view(n, n)


def assert_same_structure(got, want):
    """Two SortedEdges of the same edge set: same rows, same CSR patterns, valid permutations."""
    n = want.n_nodes
    for name in ("head", "crow", "t_crow"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), msg=name)
    torch.testing.assert_close(got.tail, want.tail)  # sorted by (head, tail): only ties between relations may differ
    key = got.head * n + got.tail
    assert bool((key[1:] >= key[:-1]).all())
    assert sorted(got.by_tail.tolist()) == list(range(len(got)))  # a permutation of the edges
    t_key = got.tail[got.by_tail] * n + got.head[got.by_tail]
    assert bool((t_key[1:] >= t_key[:-1]).all())  # into the order of A^T
    torch.testing.assert_close(got.t_col, got.head[got.by_tail])
    values = (got.relation + 1).double()  # per-edge values that identify the relation: tie order must not matter
    torch.testing.assert_close(dense(got, values), dense(want, (want.relation + 1).double()))
    torch.testing.assert_close(got.matrix(values).to_dense(), dense(got, values))
    torch.testing.assert_close(got.matrix_t(values).to_dense(), dense(got, values).t())


def test_subset_equals_sorting_the_kept_edges_again():
    n = 40
    head, tail, relation = random_edges(n, 600)
    full = SortedEdges((head, tail, relation), n)
    torch.testing.assert_close(full.head, head[full.order])
    keep = torch.rand(600, generator=torch.Generator().manual_seed(1)) >= 0.3
    sub = full.subset(keep)
    kept = (head[keep], tail[keep], relation[keep])
    assert_same_structure(sub, SortedEdges(kept, n))
    for got, inp in zip((sub.head, sub.tail, sub.relation), kept):  # order refers to the filtered input list
        torch.testing.assert_close(got, inp[sub.order])
    keep2 = torch.rand(len(sub), generator=torch.Generator().manual_seed(2)) >= 0.5  # a subset of a subset
    kept2 = tuple(e[keep2] for e in kept)
    assert_same_structure(sub.subset(keep2), SortedEdges(kept2, n))
    empty = full.subset(torch.zeros(600, dtype=torch.bool))
    assert len(empty) == 0 and int(empty.crow[-1]) == 0 and not bool(empty.has_edges().any())


def test_subset_sums_and_gradients_equal_a_fresh_sort():
    """The weighted sum and its backward (A^T and SDDMM patterns) on a subset match a freshly sorted set."""
    n, heads = 30, 2
    head, tail, relation = random_edges(n, 300, seed=3)
    keep = torch.rand(300, generator=torch.Generator().manual_seed(4)) >= 0.4
    sub, fresh = SortedEdges((head, tail, relation), n).subset(keep), SortedEdges((head[keep], tail[keep], relation[keep]), n)
    w_input = torch.rand(int(keep.sum()), heads, dtype=torch.float64)  # per kept edge, in the filtered input order
    x = torch.randn(n, heads, 4, dtype=torch.float64, requires_grad=True)
    results = []
    for edges in (sub, fresh):
        w = w_input[edges.order].clone().requires_grad_(True)
        out = edge_weighted_sum(w, x, edges)
        grad_w, grad_x = torch.autograd.grad(out.square().sum(), [w, x])
        grad_w_input = torch.zeros_like(w_input).index_copy_(0, edges.order, grad_w)  # back to the input order
        results.append((out, grad_w_input, grad_x))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


def test_drop_edges_drops_the_same_edges_from_a_sorted_set():
    """A seed drops the same edges whether the list or its sorted form is passed (same mask, same draws)."""
    n = 25
    edges = random_edges(n, 200, seed=5)
    listed = drop_edges(edges, 0.3, torch.Generator().manual_seed(7))
    sorted_ = drop_edges(SortedEdges(edges, n), 0.3, torch.Generator().manual_seed(7))
    assert isinstance(sorted_, SortedEdges)
    assert_same_structure(sorted_, SortedEdges(listed, n))
    assert drop_edges(edges, 0.0) is edges


def test_cache_sorts_once_and_again_when_the_buffers_change():
    owner = torch.nn.Module()
    n = 12
    edges = random_edges(n, 50, seed=6)
    first = cached_sorted_edges(owner, edges, n)
    assert cached_sorted_edges(owner, edges, n) is first
    other = tuple(e.clone() for e in edges)  # replaced tensors (as after .to(device))
    rebuilt = cached_sorted_edges(owner, other, n)
    assert rebuilt is not first
    assert_same_structure(rebuilt, first)
    assert cached_sorted_edges(owner, other, n + 1) is not rebuilt  # another node count
    assert "_sorted_edges_cache" not in owner.state_dict()
    module = torch.nn.Module()  # a module's buffers moved (here: converted) are new tensors: sorted again
    for name, e in zip(("h", "t", "r"), edges):
        module.register_buffer(name, e, persistent=False)
    first = cached_sorted_edges(module, (module.h, module.t, module.r), n)
    module.to("cpu")  # already there: the same tensor objects, so the cache holds
    assert cached_sorted_edges(module, (module.h, module.t, module.r), n) is first
    module.h = module.h.clone()
    assert cached_sorted_edges(module, (module.h, module.t, module.r), n) is not first


def test_out_of_range_ids_name_the_range():
    with pytest.raises(ValueError, match=r"\[0, 5\).*head ids in \[0, 5\]"):
        SortedEdges((torch.tensor([0, 5]), torch.tensor([1, 2]), torch.tensor([0, 0])), 5)
    with pytest.raises(ValueError, match="tail ids in \\[-1, 2\\]"):
        SortedEdges((torch.tensor([0, 1]), torch.tensor([-1, 2]), torch.tensor([0, 0])), 5)
    assert len(SortedEdges((torch.zeros(0, dtype=torch.long),) * 3, 5)) == 0


def test_crossgmmi_training_forward_with_the_cached_edges_equals_sorting_per_call(tiny_root):
    """CrossGMMI sorts its CKG once; with edge dropout in training the result is the one of sorting the dropped
    list per call (the old path), for the same seed, values and gradients."""
    from tests.test_crossgmmi import build

    model, _, _ = build(tiny_root, aug_edge_drop=0.3, mess_dropout=0.0, aug_feature_mask=0.0)
    model.train()
    edges = (model.ckg_head, model.ckg_tail, model.ckg_relation)
    n = model.n_users + model.n_entities
    x = torch.randn(n, model.embedding_size, requires_grad=True)
    rel = model.relation_embedding.weight
    outs = []
    for passed in (edges, cached_sorted_edges(model, edges, n)):
        torch.manual_seed(11)
        out = model.encoder(x, rel, passed, edge_drop=0.3)
        outs.append((out, torch.autograd.grad(out.square().sum(), [x])[0]))
    torch.testing.assert_close(outs[0], outs[1])
    torch.manual_seed(11)
    model.forward()
    assert cached_sorted_edges(model, edges, n) is model._sorted_edges_cache[2]  # forward used (and kept) the cache
