"""Sums over a graph's edges without per-edge copies of the summed vectors: the aggregation of the attention
layers (CrossGMMI's relation-aware GAT, MKGAT's attention layer).

* :class:`SortedEdges` - an edge set (head, tail, relation) sorted once, with the CSR patterns of A and A^T;
  :meth:`SortedEdges.subset` keeps it sorted through edge dropout (O(E) masks, no new sort).
* :func:`cached_sorted_edges` - a module's fixed edge buffers sorted once and kept (not once per forward).
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
    and shared by every layer and by the backward pass; subsets (edge dropout) in O(E) by :meth:`subset`.

    Attributes:
        head, tail, relation ([E] long): the edges sorted by (head, tail): the order of every per-edge tensor
            of the layers (logits, attention weights).
        order ([E] long): position in the input edge list of each sorted edge (see :attr:`order`).
        crow ([N + 1] long): row pointers of A [N, N] with A[head_e, tail_e] = value_e (columns sorted within
            rows, as cuSPARSE expects).
        by_tail ([E] long), t_crow ([N + 1]), t_col ([E]): the permutation to the order of A^T (sorted by
            (tail, head)) and the CSR pattern of A^T, for the gradient of the nodes.
    """

    def __init__(self, edges, n_nodes):
        head, tail, relation = edges
        self.n_nodes = int(n_nodes)
        if head.numel():  # one check per sort (a device sync): CSR construction would fail without naming why
            (h_min, h_max), (t_min, t_max) = (tuple(int(v) for v in torch.aminmax(e)) for e in (head, tail))
            if min(h_min, t_min) < 0 or max(h_max, t_max) >= self.n_nodes:
                raise ValueError(f"edge node ids must lie in [0, {self.n_nodes}) (the number of nodes): got head ids "
                                 f"in [{h_min}, {h_max}], tail ids in [{t_min}, {t_max}]")
        self._order = torch.argsort(head * self.n_nodes + tail)
        self.head, self.tail, self.relation = (e.index_select(0, self._order) for e in (head, tail, relation))
        self.by_tail = torch.argsort(self.tail * self.n_nodes + self.head)
        self.t_col = self.head.index_select(0, self.by_tail)
        self.crow = self._row_pointers(self.head)
        self.t_crow = self._row_pointers(self.tail)  # counts per row of A^T: independent of the edges' order

    def __len__(self):
        return self.head.numel()

    def subset(self, keep):
        """The edges with ``keep`` [E] bool, ``keep`` given in the *input* order of the edge list this object was
        built from (as :func:`~recbole_mkg.model.graph_encoder.drop_edges` draws it), -> :class:`SortedEdges`.

        The same edge set as ``SortedEdges`` of the input list filtered by ``keep``, in O(E) (masks, a cumulative
        sum, gathers): a subset of a sorted list is sorted, so neither sort runs again. Its ``order`` refers to
        the filtered input list."""
        keep_sorted = keep.index_select(0, self.order)
        kept = keep_sorted.nonzero().squeeze(1)  # sorted positions kept (one nonzero, shared by the gathers)
        keep_t = keep_sorted.index_select(0, self.by_tail)
        kept_t = keep_t.nonzero().squeeze(1)
        counts = torch.cumsum(keep_sorted, 0)  # kept edges up to each sorted position
        zero = counts.new_zeros(1)
        sub = SortedEdges.__new__(SortedEdges)
        sub.n_nodes = self.n_nodes
        sub.head, sub.tail, sub.relation = (e.index_select(0, kept) for e in (self.head, self.tail, self.relation))
        sub.by_tail = (counts - 1).index_select(0, self.by_tail.index_select(0, kept_t))
        sub.t_col = self.t_col.index_select(0, kept_t)
        # row pointers: kept edges before each old row start (N gathers, no bincount over the edges)
        sub.crow = torch.cat([zero, counts]).index_select(0, self.crow)
        sub.t_crow = torch.cat([zero, torch.cumsum(keep_t, 0)]).index_select(0, self.t_crow)
        sub._order, sub._order_of_subset = None, (self, kept, keep)
        return sub

    @property
    def order(self):
        """[E] long: position in the input edge list of each sorted edge (head = input_head[order]); for a
        :meth:`subset`, in the filtered input list, computed on first use (edge dropout never needs it)."""
        if self._order is None:
            parent, kept, keep = self._order_of_subset
            self._order = (torch.cumsum(keep, 0) - 1).index_select(0, parent.order.index_select(0, kept))
            self._order_of_subset = None
        return self._order

    def has_edges(self):
        """[N] bool: the nodes that are the head of at least one edge (the rows of A that are not empty)."""
        return self.crow[1:] > self.crow[:-1]

    def _row_pointers(self, rows):
        counts = torch.bincount(rows, minlength=self.n_nodes)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def matrix(self, values):
        """[E] values (this object's edge order) -> CSR A [N, N], A[head_e, tail_e] = values_e."""
        return _csr(self.crow, self.tail, values, self.n_nodes)

    def matrix_t(self, values):
        """[E] values (this object's edge order) -> CSR of A^T [N, N]."""
        return _csr(self.t_crow, self.t_col, values.index_select(0, self.by_tail), self.n_nodes)


def cached_sorted_edges(owner, edges, n_nodes):
    """The :class:`SortedEdges` of a module's fixed edge buffers ``edges`` (head, tail, relation), built on first
    use and kept on ``owner``; built again when the buffers are other tensor objects (the module moved to another
    device, a buffer was replaced), so a model sorts its graph once, not in every forward. Changing a buffer in
    place is not seen: replace it. Not a buffer itself: derived, never saved."""
    cache = getattr(owner, "_sorted_edges_cache", None)
    if cache is None or cache[0] != int(n_nodes) or any(kept is not e for kept, e in zip(cache[1], edges)):
        cache = (int(n_nodes), tuple(edges), SortedEdges(edges, n_nodes))  # the buffers themselves: identity test
        owner._sorted_edges_cache = cache
    return cache[2]


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
