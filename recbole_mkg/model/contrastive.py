r"""Contrastive objective, alignment metrics and dynamic negative sampling (CrossGMMI-DUKGLR).

* :func:`info_nce` - L = -log exp(s(a_i, p_i)/tau) / sum_j exp(s(a_i, c_j)/tau), s = cosine, candidates c =
  the batch's positives (in-batch negatives) plus extra sampled negatives; candidates that are the same
  entity as the positive (duplicates, a sampled negative hitting the positive) are masked out.
* :func:`alignment_metrics` - Hits@k and MRR of ranking the true counterpart among candidates by cosine.
* :class:`DynamicNegativeSampler` - hard negatives drawn from the current model's scores, mixed with the
  uniform ones of RecBole's sampler, never a training positive of the user.
"""
import torch
import torch.nn.functional as F


def info_nce(anchor, positive, temperature, negatives=None, positive_ids=None, negative_ids=None):
    """InfoNCE with in-batch and sampled negatives.

    Args:
        anchor, positive (Tensor): [B, d] the two representations of the same B entities.
        temperature (float): tau.
        negatives (Tensor): [M, d] extra negatives shared by the batch (optional).
        positive_ids (Tensor): [B] ids of the positives; equal ids in the batch are not used as negatives.
        negative_ids (Tensor): [M] ids of the extra negatives; a negative equal to the row's positive is masked.

    Returns:
        Tensor: scalar mean loss.
    """
    a = F.normalize(anchor, dim=-1)
    logits = a @ F.normalize(positive, dim=-1).T  # [B, B]
    batch = torch.arange(a.size(0), device=a.device)
    if positive_ids is not None:
        same = (positive_ids[:, None] == positive_ids[None, :]) & (batch[:, None] != batch[None, :])
        logits = logits.masked_fill(same, float("-inf"))
    if negatives is not None and negatives.numel():
        extra = a @ F.normalize(negatives, dim=-1).T  # [B, M]
        if positive_ids is not None and negative_ids is not None:
            extra = extra.masked_fill(positive_ids[:, None] == negative_ids[None, :], float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return F.cross_entropy(logits / temperature, batch)


@torch.no_grad()
def alignment_metrics(source, candidates, target, ks=(1, 10), chunk_size=1024):
    """Rank each source's true counterpart among all candidates by cosine similarity.

    Args:
        source (Tensor): [n, d] representations of the held-out entities in KG A.
        candidates (Tensor): [m, d] representations of the candidate entities in KG B.
        target (Tensor): [n] index into ``candidates`` of each source's counterpart.

    Returns:
        dict: ``hits@k`` for k in ``ks`` and ``mrr``; rank = 1 + number of candidates scored strictly higher.
    """
    s = F.normalize(source, dim=-1)
    c = F.normalize(candidates, dim=-1)
    ranks = []
    for start in range(0, s.size(0), chunk_size):  # chunks bound memory at chunk_size x m
        sims = s[start:start + chunk_size] @ c.T
        true = sims.gather(1, target[start:start + chunk_size, None])
        ranks.append((sims > true).sum(1) + 1)
    ranks = torch.cat(ranks).float()
    result = {f"hits@{k}": float((ranks <= k).float().mean()) for k in ks}
    result["mrr"] = float((1.0 / ranks).mean())
    return result


class DynamicNegativeSampler(torch.nn.Module):
    """Dynamic negative sampling (hard negatives from the current scores, mixed with uniform ones).

    For each (user, positive) pair, ``n_candidates`` items are drawn uniformly; those that are training
    positives of the user are discarded, and the highest-scoring remaining candidate is the hard negative.
    With probability ``hard_ratio`` it replaces the uniform negative drawn by RecBole's sampler (which is
    never a positive either); when every candidate was a positive, the uniform negative is kept.

    Args:
        n_items (int): number of items (ids 1..n_items-1 are valid, 0 is padding).
        users, items (Tensor): the training interactions (positives), [N] each.
    """

    def __init__(self, n_items, users, items, n_candidates=16, hard_ratio=0.5):
        super().__init__()
        if not isinstance(n_candidates, int) or n_candidates < 0:
            raise ValueError(f"config 'dns_candidates' must be a non-negative integer, got {n_candidates!r}")
        if not 0 <= hard_ratio <= 1:
            raise ValueError(f"config 'hard_neg_ratio' must be in [0, 1], got {hard_ratio!r}")
        self.n_items, self.n_candidates, self.hard_ratio = n_items, n_candidates, hard_ratio
        keys = torch.unique(users.long() * n_items + items.long())  # sorted
        self.register_buffer("positive_keys", keys, persistent=False)  # from the dataset: not saved

    def is_positive(self, users, items):
        """users [B], items [B, K] -> [B, K] bool, True where (user, item) is a training interaction."""
        keys = users[:, None] * self.n_items + items
        if self.positive_keys.numel() == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        index = torch.searchsorted(self.positive_keys, keys).clamp(max=self.positive_keys.numel() - 1)
        return self.positive_keys[index] == keys

    @torch.no_grad()
    def sample(self, users, uniform_negatives, user_repr, item_repr):
        """users [B], uniform_negatives [B]; user_repr [n_users, D], item_repr [n_items, D] (current model).
        Returns [B] negatives."""
        if self.n_candidates == 0 or self.hard_ratio == 0:
            return uniform_negatives
        b = users.size(0)
        candidates = torch.randint(1, self.n_items, (b, self.n_candidates), device=users.device)
        scores = torch.einsum("bd,bkd->bk", user_repr[users], item_repr[candidates])
        scores = scores.masked_fill(self.is_positive(users, candidates), float("-inf"))
        best, arg = scores.max(dim=1)
        hard = candidates.gather(1, arg[:, None]).squeeze(1)
        use_hard = torch.isfinite(best) & (torch.rand(b, device=users.device) < self.hard_ratio)
        return torch.where(use_hard, hard, uniform_negatives)
