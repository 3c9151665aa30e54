"""NumPy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_`` and the builtin aliases
``np.float``/``np.int``/``np.long``/... that RecBole 1.2.1 still uses.

``Config.compatibility_settings`` reads ``np.float_`` (AttributeError on NumPy 2), and RecBole's metrics,
dataset and layers use ``np.float`` and ``np.long``. The fix restores the aliases RecBole expects, only
where NumPy lacks them, and replaces ``compatibility_settings`` with a version that works on NumPy 1 and 2.
"""
import warnings

import numpy as np

#: alias name -> the type RecBole meant by it (the NumPy 1.x meaning)
ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def _missing(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # NumPy 2 warns on the expired aliases
        try:
            getattr(np, name)
        except AttributeError:
            return True
    return False


def restore_aliases():
    for name, value in ALIASES.items():
        if _missing(name):
            setattr(np, name, value)


def _compatibility_settings(self):  # replaces recbole Config.compatibility_settings
    restore_aliases()


def apply():
    restore_aliases()
    from recbole.config.configurator import Config

    Config.compatibility_settings = _compatibility_settings
