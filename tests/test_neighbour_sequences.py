"""BFS neighbour sequences (Multi-KG4Rec Sec. 4.2.2): hop order, uniform choice within a hop, and the
memory-bounded expansion (chunking and pruning must not change the result)."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

from recbole_mkg.model.neighbour_sequences import bfs_sequences


def random_graph(n=60, edges=150, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, edges), rng.integers(0, n, edges)
    keep = a != b
    adj = sp.coo_matrix((np.ones(keep.sum()), (a[keep], b[keep])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float32)
    return adj.tocsr()


def test_sequences_follow_bfs_distances_on_a_random_graph():
    adj = random_graph()
    seeds = np.arange(0, 60, 3)
    seq_len, max_hops = 8, 2
    seq, pad = bfs_sequences(adj, seeds, seq_len, max_hops, seed=1)
    dist = shortest_path(adj, unweighted=True, indices=seeds)
    for s, row, row_pad in zip(range(len(seeds)), seq, pad):
        members = row[~row_pad]
        assert members[0] == seeds[s] and len(set(members.tolist())) == len(members)
        hops = dist[s, members]
        assert np.all(np.diff(hops) >= 0) and hops.max() <= max_hops  # nearest first, within max_hops
        reachable = int(np.sum(dist[s] <= max_hops))
        assert len(members) == min(seq_len, reachable)  # filled as far as the graph allows
        assert np.all(row_pad[len(members):]) and not row_pad[: len(members)].any()
        deepest = hops.max()
        for h in range(1, int(deepest)):  # every hop before the last one used is complete
            assert set(np.flatnonzero(dist[s] == h)) <= set(members.tolist())


def test_chunking_does_not_change_the_sequences():
    adj = random_graph(n=200, edges=900, seed=3)
    seeds = np.arange(200)
    whole = bfs_sequences(adj, seeds, 12, 2, seed=7)
    for chunk in (1, 17, 500):
        parts = bfs_sequences(adj, seeds, 12, 2, seed=7, chunk_nonzeros=chunk)
        np.testing.assert_array_equal(parts[0], whole[0])
        np.testing.assert_array_equal(parts[1], whole[1])
    with pytest.raises(ValueError, match="chunk_nonzeros"):
        bfs_sequences(adj, seeds, 12, 2, seed=7, chunk_nonzeros=0)


def test_choice_within_a_hop_is_random_over_seeds():
    # a star: node 0 has 10 neighbours; sequences of 4 keep 3 of them, a different 3 per seed
    n = 11
    adj = sp.csr_matrix((np.ones(20), (np.r_[np.zeros(10), np.arange(1, 11)], np.r_[np.arange(1, 11), np.zeros(10)])),
                        shape=(n, n))
    chosen = [frozenset(bfs_sequences(adj, np.array([0]), 4, 1, seed=s)[0][0, 1:].tolist()) for s in range(200)]
    counts = np.bincount(np.concatenate([list(c) for c in chosen]), minlength=n)[1:]
    assert len(set(chosen)) > 50  # many different subsets
    assert counts.min() > 30 and counts.max() < 90  # each neighbour ~ 200 * 3 / 10 = 60 times


def test_a_sequence_filled_by_hop_one_holds_no_hop_two_node():
    # node 0 has 5 neighbours, each with 50 more; seq_len 4 is filled by hop 1 (a chunk bound of one
    # entry puts every sequence in its own chunk)
    n = 6 + 5 * 50
    rows, cols = [], []
    for i in range(1, 6):
        rows += [0, i]
        cols += [i, 0]
        for j in range(50):
            leaf = 6 + (i - 1) * 50 + j
            rows += [i, leaf]
            cols += [leaf, i]
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    seq, pad = bfs_sequences(adj, np.array([0]), 4, 2, seed=0, chunk_nonzeros=1)
    assert not pad.any() and set(seq[0, 1:].tolist()) <= set(range(1, 6))
