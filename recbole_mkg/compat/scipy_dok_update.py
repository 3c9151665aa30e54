"""SciPy 1.15+ dropped the private ``dok_matrix._update`` that RecBole's graph models call.

LightGCN, NGCF, SpectralCF, GCMC, NCL, KGIN and MCCLK build their normalised adjacency with
``A = sp.dok_matrix(...); A._update(data_dict)``, i.e. a bulk ``dict.update`` of ``{(row, col): value}``
without per-key checks. The fix restores that method on SciPy versions that lack it: one C-level dict
update on the matrix's backing dict, no Python loop over entries.
"""
import scipy.sparse as sp


def _update(self, data):
    """Bulk-insert ``{(row, col): value}`` like SciPy < 1.15's ``dok_matrix._update`` did."""
    backing = getattr(self, "_dict", None)
    if isinstance(backing, dict):
        backing.update(data)
        return
    # Very old/new layouts without ``_dict``: go through the vectorised public API.
    if not data:
        return
    keys = list(data.keys())
    rows, cols = zip(*keys)
    self[list(rows), list(cols)] = list(data.values())


def apply():
    for cls in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if cls is not None and not hasattr(cls, "_update"):
            cls._update = _update
