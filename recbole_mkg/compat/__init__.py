"""Small, named fixes that make RecBole 1.2.1 run on today's stack.

Each module fixes one upstream break (or, for the two evaluation fixes, an upstream bug that skews a
baseline's test metrics) and exposes ``apply()``; :func:`apply_all` runs them once, early
(``import recbole_mkg`` does it). Every fix is idempotent, and each has a test in
``tests/test_compat.py`` that fails without it.

==========================  =====================================================================
module                      what it fixes
==========================  =====================================================================
numpy2_aliases              ``Config()`` and the metrics use ``np.float_``/``np.float``/``np.long``,
                            removed in NumPy 2.
scipy_dok_update            LightGCN, NGCF, SpectralCF, GCMC, NCL, KGIN, MCCLK call the private
                            ``dok_matrix._update``, removed in SciPy 1.15+.
torch_scatter_fallback      KGIN and MCCLK import ``torch_scatter`` (no wheels for current torch):
                            a stand-in built on PyG's pure-PyTorch scatter/softmax.
cpu_ddp_wrapper             RecBole wraps every model as DDP(device_ids=[rank]), refused for CPU
                            modules: multi-process training on CPU (gloo) builds it without.
safe_checkpoints            RecBole pickles its ``Config`` into checkpoints, which ``torch.load``
                            refuses by default since torch 2.6 (``weights_only``); the plugin's
                            checkpoints store the config as plain data, written atomically.
stale_ranking_caches        KGIN and MCCLK keep the full-ranking caches of the last validation when the
                            best checkpoint is loaded: their test scored the last epoch's model.
kgin_eval_edges             RecBole's KGIN samples half of the KG edges at random in evaluation too.
upstream_warnings           three deprecation warnings RecBole/PyG raise at every run (pandas chained
                            ``fillna``, ``torch.cuda.amp.GradScaler``, ``torch.jit.script``), silenced
                            only where those libraries raise them.
==========================  =====================================================================

Two more upstream breaks are handled where they belong rather than by patching: ``recbole.quick_start``
imports ``ray.tune`` at import time (the plugin never imports it: :mod:`recbole_mkg.quick_start`), and
RecBole's DDP set-up hard-codes NCCL and CUDA (:class:`recbole_mkg.config.Config` lifts that).

pandas is held below 3 (``requirements.txt``): RecBole's data layer relies on pandas-2 semantics in many
places (``Series.agg(len)`` applied element-wise, chained ``fillna(inplace=True)``), which pandas 3's
copy-on-write and ``agg`` changes break; patching them all would mean forking RecBole's dataset code.
"""
_APPLIED = False


def apply_all():
    """Apply every compatibility fix (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    # the warning filters first: importing torch_scatter_fallback imports torch_geometric, which warns
    from recbole_mkg.compat import upstream_warnings

    upstream_warnings.apply()
    from recbole_mkg.compat import (
        cpu_ddp_wrapper,
        kgin_eval_edges,
        numpy2_aliases,
        safe_checkpoints,
        scipy_dok_update,
        stale_ranking_caches,
        torch_scatter_fallback,
    )

    numpy2_aliases.apply()
    scipy_dok_update.apply()
    safe_checkpoints.apply()
    torch_scatter_fallback.apply()
    cpu_ddp_wrapper.apply()
    stale_ranking_caches.apply()
    kgin_eval_edges.apply()  # after torch_scatter_fallback: importing KGIN imports torch_scatter
    _APPLIED = True
