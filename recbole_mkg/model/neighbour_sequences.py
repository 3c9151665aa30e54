"""Breadth-first neighbour sequences of items on the collaborative KG (Multi-KG4Rec Sec. 4.2.2).

For item i: ``[i, 1-hop neighbours..., 2-hop neighbours..., PAD...]`` of fixed length N, where neighbours
are users who interacted with i (training interactions only) and KG entities linked to i in either
direction. Within a hop, neighbours are ordered by a seeded random key, so a sequence is a uniform sample
of the nearest neighbours, not the lowest ids. Built once per model with sparse matrix products
(no Python loop over items or edges), hop by hop for the sequences that still have room and in
memory-bounded chunks of sequences, and kept as a device buffer.
"""
import numpy as np
import scipy.sparse as sp
import torch


def undirected_ckg(dataset):
    """Symmetric 0/1 CSR adjacency [n_users + n_entities]^2 of the CKG (KG edges in both directions)."""
    ckg = dataset.ckg_graph(form="coo").tocsr()
    adj = ((ckg + ckg.T) > 0).astype(np.float32)
    adj.setdiag(0)
    adj.eliminate_zeros()
    return adj.tocsr()


def _pair_keys(rows, cols, n_cols, seed):
    """Pseudo-random uint64 keys of (row, col) pairs (splitmix64 of ``row * n_cols + col``, mixed with
    ``seed``): a random order within a hop that does not depend on how the rows are chunked."""
    with np.errstate(over="ignore"):
        x = rows.astype(np.uint64) * np.uint64(n_cols) + cols.astype(np.uint64)
        x += np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % (1 << 64))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def bfs_sequences(adjacency, seeds, seq_len, max_hops=2, seed=0, chunk_nonzeros=1 << 24):
    """Fixed-length BFS sequences.

    Args:
        adjacency (scipy.sparse.csr_matrix): [n, n] symmetric 0/1 adjacency.
        seeds (np.ndarray): [S] node ids; each sequence starts with its seed.
        seq_len (int): N, sequence length including the seed.
        max_hops (int): farthest hop collected.
        seed (int): random seed of the within-hop order.
        chunk_nonzeros (int): memory bound: a hop is expanded for groups of sequences whose neighbour
            lists hold at most about this many entries (the result does not depend on it).

    Returns:
        tuple: ``sequences`` [S, N] int64 node ids (0 at padding), ``padding`` [S, N] bool.

    Only sequences that still have room are expanded to the next hop (an item with N - 1 or more
    direct neighbours never materialises its 2-hop set), so time and memory follow what is kept, not the
    size of every 2-hop neighbourhood.
    """
    if chunk_nonzeros < 1:
        raise ValueError(f"bfs_sequences: chunk_nonzeros must be a positive integer, got {chunk_nonzeros!r}")
    adjacency = adjacency.tocsr().astype(np.float32, copy=False)  # no copy of a CSR float32 adjacency
    seeds = np.asarray(seeds, dtype=np.int64)
    n_seeds, n_nodes = len(seeds), adjacency.shape[0]
    sequences = np.zeros((n_seeds, seq_len), dtype=np.int64)
    padding = np.ones((n_seeds, seq_len), dtype=bool)
    sequences[:, 0], padding[:, 0] = seeds, False
    filled = np.ones(n_seeds, dtype=np.int64)
    degree = np.diff(adjacency.indptr).astype(np.float64)
    rows = np.arange(n_seeds)  # the sequences still being expanded, and their frontier / visited sets
    frontier = sp.csr_matrix((np.ones(n_seeds, dtype=np.float32), (rows, seeds)), shape=(n_seeds, n_nodes))
    visited = frontier.copy()
    for hop in range(1, max_hops + 1):
        active = filled[rows] < seq_len
        if not active.any():
            break
        rows, frontier, visited = rows[active], frontier[active], visited[active]
        work = np.cumsum(frontier @ degree)  # upper bound of each expansion's entries, cumulated
        cuts = np.flatnonzero(np.diff(work // chunk_nonzeros)) + 1
        parts = []
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):  # loop over memory-sized chunks
            reached = frontier[a:b] @ adjacency
            reached.data[:] = 1.0
            new = (reached - reached.multiply(visited[a:b])).tocsr()
            new.eliminate_zeros()
            coo = new.tocoo()
            owner, node = rows[a:b][coo.row], coo.col.astype(np.int64)
            order = np.lexsort((_pair_keys(owner, node, n_nodes, seed), owner))
            owner, node = owner[order], node[order]
            position = filled[owner] + np.arange(len(owner)) - np.searchsorted(owner, owner)
            keep = position < seq_len
            sequences[owner[keep], position[keep]] = node[keep]
            padding[owner[keep], position[keep]] = False
            filled += np.bincount(owner[keep], minlength=n_seeds)
            if hop < max_hops:
                parts.append(new)
        if hop < max_hops:
            frontier = sp.vstack(parts).tocsr() if parts else frontier[:0]
            visited = (visited + frontier).tocsr()
    return sequences, padding


def item_neighbour_sequences(dataset, n_users, n_items, seq_len, max_hops=2, seed=0):
    """BFS sequences of every item (node ``n_users + item``) on the training CKG, as torch tensors."""
    adjacency = undirected_ckg(dataset)
    seeds = n_users + np.arange(n_items)
    sequences, padding = bfs_sequences(adjacency, seeds, seq_len, max_hops, seed)
    return torch.from_numpy(sequences), torch.from_numpy(padding)
