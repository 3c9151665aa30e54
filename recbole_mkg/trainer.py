"""Trainers the plugin's models need, built on RecBole's.

RecBole's trainers are reused as they are (with the checkpoint fix of :mod:`recbole_mkg.compat`);
a model gets a trainer here only when its training schedule differs.
"""
from recbole.trainer import KGATTrainer


class MultiKG4RecTrainer(KGATTrainer):
    """Alternating schedule of KGAT (Wang et al., 2019), which Multi-KG4Rec's loss (Eq. 13) inherits.

    Each epoch: one pass of BPR batches (Eq. 12), one pass of TransR batches (Eq. 2), then the
    knowledge-aware attention (Eq. 8) is recomputed without gradient (``model.update_attentive_A``).
    """
from recbole_mkg.trainer_pretrain import CrossGMMITrainer, MKGATTrainer  # noqa: E402,F401
