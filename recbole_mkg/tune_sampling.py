"""Stratified (Latin hypercube) trials for Ray Tune sweeps: the ``stratified`` sampler.

With a small budget, independent random draws leave a model's sweep to luck: four log-uniform draws of the
learning rate in 1e-4..1e-2 all fall below 2.5e-3 with probability 0.70^4 = 0.24, and a model whose best
trial is decided by its learning rate then loses to its draws, not to the other models (it happened to
Multi-KG4Rec in the first equal-budget run on ml-100k-kg, docs/results.md). The stratified sampler removes
that luck:

* a continuous parameter's range (uniform, or log-uniform in log space) is cut into ``n`` equal strata and
  every stratum gets exactly one trial (a random point inside it); ``quniform``/``qloguniform`` values are
  then rounded to their step, integers floored (``randint``'s upper bound stays excluded);
* a ``choice`` with ``k`` values gives every value ``n // k`` or ``n // k + 1`` trials;
* each parameter's strata are shuffled independently (a Latin hypercube over the trials);
* ``grid`` parameters keep their meaning: every grid point x ``n`` stratified trials.

The draws of a parameter depend only on ``(seed, its name, its domain, n)``: models whose spaces share a
line (``learning_rate loguniform -9.21,-4.61``) get the **same values** of it in an equal-budget
comparison, whatever else their spaces hold.
"""
import itertools
import math
import zlib

import numpy as np

__all__ = ["SAMPLERS", "stratified_trials"]

#: the sweep's trial samplers: Ray's independent draws, or the stratified trials of this module
SAMPLERS = ("random", "stratified")


def _rng(seed, name):
    """A generator per (seed, parameter name): a parameter's draws do not depend on the other parameters."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def _stratified_unit(rng, n):
    """n points of [0, 1), one in each stratum [i/n, (i+1)/n), in a random order."""
    return (rng.permutation(n) + rng.random(n)) / n


def _quantize(value, q):
    return float(np.round(value / q) * q)


def _values(name, domain, n, rng):
    """n stratified values of one Ray Tune domain (``Float``, ``Integer``, ``Categorical``)."""
    from ray.tune.search import sample

    if isinstance(domain, sample.Categorical):
        k = len(domain.categories)
        return [domain.categories[i % k] for i in rng.permutation(n)]
    sampler = domain.get_sampler()
    q = None
    if isinstance(sampler, sample.Quantized):
        q, sampler = sampler.q, sampler.get_sampler()
    if not isinstance(sampler, (sample.Uniform, sample.LogUniform)):
        raise ValueError(f"parameter {name!r}: the stratified sampler handles uniform, log-uniform and choice "
                         f"parameters, not {type(sampler).__name__}; use --sampler=random")
    u = _stratified_unit(rng, n)
    low, high = float(domain.lower), float(domain.upper)
    if isinstance(sampler, sample.LogUniform):
        points = np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        points = low + u * (high - low)
    if isinstance(domain, sample.Integer):
        ints = np.minimum(np.floor(points), high - 1).astype(int)  # randint: the upper bound is excluded
        return [int(_quantize(v, q)) if q else int(v) for v in ints]
    return [_quantize(v, q) if q else float(v) for v in points]


def stratified_trials(space, n, seed=2020):
    """The stratified trials of a parsed search space (:func:`recbole_mkg.tune.parse_search_space`).

    Args:
        space (dict): parameter -> Ray Tune domain, ``{"grid_search": [...]}`` or a fixed value.
        n (int): stratified trials (per grid point).
        seed (int): the draws' seed.

    Returns:
        list[dict]: ``n x (grid points)`` trials, each a value for every non-fixed parameter.
    """
    from ray.tune.search import sample

    if int(n) < 1:
        raise ValueError(f"--num_samples must be at least 1 for the stratified sampler, got {n}")
    grid = {k: v["grid_search"] for k, v in sorted(space.items()) if isinstance(v, dict) and "grid_search" in v}
    sampled = {k: _values(k, v, int(n), _rng(seed, k)) for k, v in sorted(space.items())
               if isinstance(v, sample.Domain)}
    points = []
    for combo in itertools.product(*grid.values()):
        for i in range(int(n)):
            points.append({**dict(zip(grid, combo)), **{k: values[i] for k, values in sampled.items()}})
    return points
