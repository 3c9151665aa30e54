"""Breadth-first neighbour sequences of items on the collaborative KG (Multi-KG4Rec Sec. 4.2.2).

For item i: ``[i, 1-hop neighbours..., 2-hop neighbours..., PAD...]`` of fixed length N, where neighbours
are users who interacted with i (training interactions only) and KG entities linked to i in either
direction. Within a hop, neighbours are ordered by a seeded random key, so a sequence is a uniform sample
of the nearest neighbours, not the lowest ids. Built once per model with sparse matrix products
(no Python loop over items or edges) and kept as a device buffer.
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


def bfs_sequences(adjacency, seeds, seq_len, max_hops=2, seed=0):
    """Fixed-length BFS sequences.

    Args:
        adjacency (scipy.sparse.csr_matrix): [n, n] symmetric 0/1 adjacency.
        seeds (np.ndarray): [S] node ids; each sequence starts with its seed.
        seq_len (int): N, sequence length including the seed.
        max_hops (int): farthest hop collected.
        seed (int): random seed of the within-hop order.

    Returns:
        tuple: ``sequences`` [S, N] int64 node ids (0 at padding), ``padding`` [S, N] bool.
    """
    rng = np.random.default_rng(seed)
    n_seeds = len(seeds)
    frontier = sp.csr_matrix((np.ones(n_seeds, dtype=np.float32), (np.arange(n_seeds), seeds)),
                             shape=(n_seeds, adjacency.shape[0]))
    visited = frontier.copy()
    rows, cols, hops = [np.arange(n_seeds)], [np.asarray(seeds)], [np.zeros(n_seeds)]
    for hop in range(1, max_hops + 1):
        reached = (frontier @ adjacency).astype(bool).astype(np.float32)
        new = reached - reached.multiply(visited.astype(bool))
        new.eliminate_zeros()
        new = new.tocoo()
        if new.nnz == 0:
            break
        rows.append(new.row)
        cols.append(new.col)
        hops.append(np.full(new.nnz, hop, dtype=np.float64))
        visited = ((visited + new) > 0).astype(np.float32).tocsr()
        frontier = new.tocsr()
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    key = np.concatenate(hops) + rng.random(len(row)) * (np.concatenate(hops) > 0)
    order = np.lexsort((key, row))
    row, col = row[order], col[order]
    starts = np.searchsorted(row, np.arange(n_seeds))
    rank = np.arange(len(row)) - starts[row]
    keep = rank < seq_len
    sequences = np.zeros((n_seeds, seq_len), dtype=np.int64)
    padding = np.ones((n_seeds, seq_len), dtype=bool)
    sequences[row[keep], rank[keep]] = col[keep]
    padding[row[keep], rank[keep]] = False
    return sequences, padding


def item_neighbour_sequences(dataset, n_users, n_items, seq_len, max_hops=2, seed=0):
    """BFS sequences of every item (node ``n_users + item``) on the training CKG, as torch tensors."""
    adjacency = undirected_ckg(dataset)
    seeds = n_users + np.arange(n_items)
    sequences, padding = bfs_sequences(adjacency, seeds, seq_len, max_hops, seed)
    return torch.from_numpy(sequences), torch.from_numpy(padding)
