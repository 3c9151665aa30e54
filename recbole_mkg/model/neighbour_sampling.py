"""Mini-batched propagation with layer-wise neighbour sampling (an option beyond the papers).

The papers propagate over the whole collaborative KG in every training step. When that stops fitting in
memory (on 2 CPU cores with 8 GB it stops at about 1e7 KG triples, ``docs/benchmarks.md``), the option
``neighbour_sample_sizes: [k_1, ..., k_L]`` trains on the L-hop receptive field of each batch's users and
items only, as GraphSAGE / PyG's ``NeighborLoader`` do:

* hop 1 starts at the batch's nodes (the *targets*); every node of hop l keeps at most ``k_l`` of its
  out-edges in the attentive adjacency A. A node with more edges draws ``k_l`` of them uniformly with
  replacement and weights each by ``A[h, t] * deg(h) / k_l``, so ``block @ x`` is an unbiased estimate of
  ``(A x)[h]``; a node with at most ``k_l`` edges keeps them all, exactly. ``k_l = -1`` keeps every edge
  (exact mini-batching: the targets' representations equal the full-graph ones).
* layer 1 of the propagation maps the outermost node set onto the next one, ..., layer L onto the targets;
  each node set starts with the previous one (PyG's convention), so a node's own ego row is the prefix.

Evaluation keeps the full-graph pass (no gradient, so no activations are stored). The sampling is
vectorised (``repeat_interleave`` over CSR row ranges; no loop over nodes or edges) and runs on the
adjacency's device.
"""
import torch

from recbole_mkg.model.layers import PropagationMatrix


def check_sample_sizes(value, n_layers, key="neighbour_sample_sizes"):
    """``None`` (full-graph training, the papers) or a list of ``n_layers`` ints, each > 0 or -1."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != n_layers or not all(
            isinstance(k, int) and not isinstance(k, bool) and (k > 0 or k == -1) for k in value):
        raise ValueError(f"config '{key}' must be null (full-graph training) or a list of {n_layers} "
                         f"positive ints or -1 (all neighbours), one per propagation layer, e.g. "
                         f"{[10] * n_layers}; got {value!r}")
    return [int(k) for k in value]


class SampledHops:
    """The sampled receptive field of a batch.

    Attributes:
        nodes (Tensor): [n_L] global node ids of the outermost set; ``nodes[:n_targets]`` are the targets.
        n_targets (int): number of target nodes.
        hops (list): per hop l = 1..L, ``(n_dst, n_src, dst, src, edge, scale)``: local destination rows,
            local source columns, CSR positions of the sampled edges in A, and their weights' factors.
    """

    def __init__(self, nodes, n_targets, hops):
        self.nodes, self.n_targets, self.hops = nodes, n_targets, hops

    def blocks(self, values):
        """Propagation matrices in layer order (outermost first) for adjacency values ``values`` [E]
        (the CSR values of A; several views with one sparsity pattern share one sample)."""
        out = []
        for n_dst, n_src, dst, src, edge, scale in reversed(self.hops):
            weight = values[edge] * scale
            coo = torch.sparse_coo_tensor(torch.stack([dst, src]), weight, (n_dst, n_src), check_invariants=False)
            out.append(PropagationMatrix(coo))
        return out


def sample_hops(matrix, targets, sizes):
    """Sample the receptive field of ``targets`` [T] (unique global node ids) in ``matrix``
    (:class:`PropagationMatrix` A, rows = heads) with ``sizes`` [k_1..k_L]. Returns :class:`SampledHops`."""
    crow = matrix.csr.crow_indices()
    col = matrix.csr.col_indices()
    device = crow.device
    local = torch.full((matrix.shape[1],), -1, dtype=torch.long, device=device)  # global id -> local id
    nodes = targets
    local[nodes] = torch.arange(len(nodes), device=device)
    hops = []
    for k in sizes:
        start = crow[nodes]
        degree = crow[nodes + 1] - start
        rows = torch.arange(len(nodes), device=device)
        keep_all = degree <= k if k > 0 else torch.ones_like(degree, dtype=torch.bool)
        # every edge of the nodes with at most k edges (exact)
        count = degree[keep_all]
        first = torch.cumsum(count, 0) - count
        offset = torch.arange(int(count.sum()), device=device) - torch.repeat_interleave(first, count)
        edge_all = torch.repeat_interleave(start[keep_all], count) + offset
        dst_all = torch.repeat_interleave(rows[keep_all], count)
        # k edges with replacement for the others, weighted deg / k (unbiased)
        many = ~keep_all
        n_many = int(many.sum())
        if n_many:
            draw = torch.floor(torch.rand(n_many, k, device=device) * degree[many].unsqueeze(1)).long()
            edge_some = (start[many].unsqueeze(1) + draw).flatten()
            dst_some = rows[many].repeat_interleave(k)
            scale_some = (degree[many].float() / k).repeat_interleave(k)
        else:
            edge_some = dst_some = edge_all.new_empty(0)
            scale_some = torch.empty(0, device=device)
        edge = torch.cat([edge_all, edge_some])
        dst = torch.cat([dst_all, dst_some])
        scale = torch.cat([torch.ones(len(edge_all), device=device), scale_some])
        src_global = col[edge]
        new = torch.unique(src_global[local[src_global] < 0])
        local[new] = torch.arange(len(nodes), len(nodes) + len(new), device=device)
        n_dst = len(nodes)
        nodes = torch.cat([nodes, new])
        hops.append((n_dst, len(nodes), dst, local[src_global], edge, scale))
    return SampledHops(nodes, len(targets), hops)
