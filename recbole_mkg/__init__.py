"""recbole-mkg: multimodal knowledge-graph recommendation as a RecBole plugin.

Importing the package applies the RecBole compatibility fixes (:mod:`recbole_mkg.compat`) once.
"""
try:
    import recbole  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "recbole-mkg needs RecBole 1.2.1, installed without its stale pins: "
        "`pip install --no-deps recbole==1.2.1` (scripts/setup_env.sh does the whole set-up)."
    ) from err

from recbole_mkg.compat import apply_all as _apply_compat

_apply_compat()

__version__ = "0.1.0"
