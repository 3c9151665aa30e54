"""KGIN and MCCLK import ``torch_scatter``, which has no wheels for current torch releases.

When ``torch_scatter`` cannot be imported, the fix registers a small stand-in module of that name with the
functions RecBole calls (``scatter``, ``scatter_sum``/``scatter_add``, ``scatter_mean``, ``scatter_max``,
``scatter_min``, ``scatter_softmax``), implemented with PyTorch Geometric's pure-PyTorch
``torch_geometric.utils.scatter``/``softmax`` (same signatures for the arguments RecBole passes:
``src, index, dim, dim_size``). A real ``torch_scatter`` install always wins.
"""
import sys
import types

from torch_geometric.utils import scatter as pyg_scatter
from torch_geometric.utils import softmax as pyg_softmax

MODULE_NAME = "torch_scatter"


def _reduce(reduce):
    def fn(src, index, dim=-1, out=None, dim_size=None, **_):
        if out is not None:
            raise NotImplementedError("the torch_scatter stand-in does not support out=")
        return pyg_scatter(src, index, dim=dim, dim_size=dim_size, reduce=reduce)

    fn.__name__ = f"scatter_{reduce}"
    return fn


def scatter(src, index, dim=-1, out=None, dim_size=None, reduce="sum"):
    return _reduce(reduce)(src, index, dim=dim, out=out, dim_size=dim_size)


def scatter_softmax(src, index, dim=-1, dim_size=None, **_):
    return pyg_softmax(src, index, num_nodes=dim_size, dim=dim)


def build_module():
    module = types.ModuleType(MODULE_NAME)
    module.__doc__ = "recbole-mkg stand-in for torch_scatter (see recbole_mkg.compat.torch_scatter_fallback)"
    module.scatter = scatter
    module.scatter_sum = module.scatter_add = _reduce("sum")
    module.scatter_mean = _reduce("mean")
    module.scatter_max = _reduce("max")
    module.scatter_min = _reduce("min")
    module.scatter_softmax = scatter_softmax
    module.RECBOLE_MKG_STAND_IN = True
    return module


def apply():
    try:
        import torch_scatter  # noqa: F401
    except ImportError:
        sys.modules[MODULE_NAME] = build_module()
