"""Sums over a graph's edges without per-edge copies of the summed vectors: the aggregation of the attention
layers (CrossGMMI's relation-aware GAT, MKGAT's attention layer).

* :class:`SortedEdges` - an edge set (head, tail, relation) sorted once, with the CSR patterns of A and A^T.
* :func:`edge_weighted_sum` - out[h] = sum over h's edges of weight_e x[tail_e], per attention head, as CSR
  products (SDDMM for the weights' gradient): no [E, heads, d] tensor forward or backward.
* :func:`relation_weighted_sum` - out[h] = sum over h's edges of weight_e r[relation_e]: the weights summed
  per (head, relation) into an [N x R] table when it is small (few relations), else edge by edge.
"""
import warnings

import torch

#: how an attention layer sums its weighted messages: CSR products (default) or edge by edge (the literal equations)
MESSAGE_SUMS = ("sparse", "edgewise")


class SortedEdges:
    """An edge set in the CSR form of the sparse aggregation, built once per edge set (two sorts, O(E log E))
    and shared by every layer and by the backward pass.

    Attributes:
        head, tail, relation ([E] long): the edges sorted by (head, tail): the order of every per-edge tensor
            of the layers (logits, attention weights).
        crow ([N + 1] long): row pointers of A [N, N] with A[head_e, tail_e] = value_e (columns sorted within
            rows, as cuSPARSE expects).
        by_tail ([E] long), t_crow ([N + 1]), t_col ([E]): the permutation to the order of A^T (sorted by
            (tail, head)) and the CSR pattern of A^T, for the gradient of the nodes.
    """

    def __init__(self, edges, n_nodes):
        head, tail, relation = edges
        self.n_nodes = int(n_nodes)
        order = torch.argsort(head * self.n_nodes + tail)
        self.head, self.tail, self.relation = head[order], tail[order], relation[order]
        self.crow = self._row_pointers(self.head)
        self.by_tail = torch.argsort(self.tail * self.n_nodes + self.head)
        self.t_col = self.head.index_select(0, self.by_tail)
        self.t_crow = self._row_pointers(self.tail.index_select(0, self.by_tail))

    def has_edges(self):
        """[N] bool: the nodes that are the head of at least one edge (the rows of A that are not empty)."""
        return self.crow[1:] > self.crow[:-1]

    def _row_pointers(self, sorted_rows):
        counts = torch.bincount(sorted_rows, minlength=self.n_nodes)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def matrix(self, values):
        """[E] values (this object's edge order) -> CSR A [N, N], A[head_e, tail_e] = values_e."""
        return _csr(self.crow, self.tail, values, self.n_nodes)

    def matrix_t(self, values):
        """[E] values (this object's edge order) -> CSR of A^T [N, N]."""
        return _csr(self.t_crow, self.t_col, values.index_select(0, self.by_tail), self.n_nodes)


def _csr(crow, col, values, n):
    with warnings.catch_warnings():  # "sparse CSR support is in beta": what we measured and test
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (n, n))


class _EdgeWeightedSum(torch.autograd.Function):
    """out[h_node, k] = sum over the node's edges e of weight[e, k] x[tail_e, k] for each attention head k, as
    one CSR product per head (no [E, H, d_head] tensor).  weight [E, H], x [N, H, d_head] -> [N, H, d_head].

    Backward: x <- A_k^T grad (the CSR of the transpose), weight[e, k] <- <grad[head_e, k], x[tail_e, k]>
    (a sampled dense-dense product, ``torch.sparse.sampled_addmm``)."""

    @staticmethod
    def forward(ctx, weight, x, edges):
        ctx.edges = edges
        ctx.save_for_backward(weight, x)
        return torch.stack([edges.matrix(weight[:, k].contiguous()) @ x[:, k].contiguous()
                            for k in range(x.size(1))], 1)

    @staticmethod
    def backward(ctx, grad):
        weight, x = ctx.saved_tensors
        edges, heads = ctx.edges, range(x.size(1))
        grad_weight = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = torch.stack([edges.matrix_t(weight[:, k].contiguous()) @ grad[:, k].contiguous() for k in heads], 1)
        if ctx.needs_input_grad[0]:
            pattern = edges.matrix(weight.new_zeros(weight.size(0)))
            grad_weight = torch.stack([
                torch.sparse.sampled_addmm(pattern, grad[:, k].contiguous(), x[:, k].t(), beta=0.0).values()
                for k in heads], 1)
        return grad_weight, grad_x, None


def layer_edges(edges, n_nodes, message_sum):
    """A layer's edge set for its ``message_sum``: ``edges`` ((head, tail, relation) [E] each, or
    :class:`SortedEdges`) sorted when the sums are sparse and it is not yet.

    Returns:
        (edges for :func:`edge_weighted_sum`, (head, tail, relation) in the order of the layer's per-edge tensors).
    """
    if message_sum not in MESSAGE_SUMS:
        raise ValueError(f"message_sum {message_sum!r} is not one of {list(MESSAGE_SUMS)}")
    if message_sum == "sparse" and not isinstance(edges, SortedEdges):
        edges = SortedEdges(edges, n_nodes)
    if isinstance(edges, SortedEdges):
        return edges, (edges.head, edges.tail, edges.relation)
    return edges, tuple(edges)


def edge_weighted_sum(weight, x, edges):
    """sum over each head node's edges e of weight[e, k] x[tail_e, k], per attention head k.

    Args:
        weight ([E, H]): per-edge weights in ``edges``' order (e.g. attention coefficients).
        x ([N, H, d]): node vectors.
        edges (SortedEdges): the edge set.

    Returns:
        [N, H, d]; rows of nodes without edges are 0. Differentiable in ``weight`` and ``x``.
    """
    return _EdgeWeightedSum.apply(weight, x, edges)


def relation_table_is_small(n_nodes, n_relations, n_edges, dim):
    """Whether the [N x R] table of per-(head, relation) weight sums is no larger than E per-edge copies of a
    d-vector: the rule by which the relation term is summed grouped (KGs with few relations) or edge by edge."""
    return n_nodes * n_relations <= n_edges * dim


def relation_weighted_sum(weight, head, relation, r, n_nodes, grouped=None):
    """sum over each head node's edges e of weight[e, k] r[relation_e, k].

    Args:
        weight ([E, H]), head ([E]), relation ([E]): per-edge weights and ids (any order, the same for all).
        r ([R, H, d]): relation vectors.
        n_nodes (int): N.
        grouped (bool): sum the weights per (head, relation) into an [N x R, H] table, then one product with
            r (no per-edge copy of r); None: as :func:`relation_table_is_small` says.

    Returns:
        [N, H, d].
    """
    n_rel, n_heads = r.size(0), r.size(1)
    if grouped is None:
        grouped = relation_table_is_small(n_nodes, n_rel, weight.size(0), r.size(2))
    if grouped:
        table = weight.new_zeros(n_nodes * n_rel, n_heads).index_add_(0, head * n_rel + relation, weight)
        return torch.einsum("nrh,rhd->nhd", table.view(n_nodes, n_rel, n_heads), r)
    return r.new_zeros(n_nodes, n_heads, r.size(2)).index_add_(0, head, weight.unsqueeze(-1) * r.index_select(0, relation))
