"""RecBole's KGIN drops half of the knowledge graph's edges at random in evaluation too.

``GraphConv.forward`` calls ``edge_sampling`` (keep ``node_dropout_rate`` of the KG edges, drawn with
``np.random``) whenever the rate is above 0, in training and in evaluation alike, so validation and test
scores are those of a randomly thinned graph: noisy (they move with the numpy random state) and biased low.
The original KGIN samples edges in training only (its ``generate()`` passes ``node_dropout=False``); the
interaction-matrix dropout beside it (``SparseDropout``) already stops in evaluation. The fix: in evaluation
``edge_sampling`` returns every edge.
"""


def apply():
    from recbole.model.knowledge_aware_recommender import kgin

    sampling = kgin.GraphConv.edge_sampling
    if getattr(sampling, "recbole_mkg_fix", False):
        return

    def edge_sampling(self, edge_index, edge_type, rate=0.5):
        if not self.training:
            return edge_index, edge_type
        return sampling(self, edge_index, edge_type, rate)

    edge_sampling.recbole_mkg_fix = True
    kgin.GraphConv.edge_sampling = edge_sampling
