"""Trainers the plugin's models need, built on RecBole's.

RecBole's trainers are reused as they are (with the checkpoint fix of :mod:`recbole_mkg.compat`);
a model gets a trainer here only when its training schedule differs.
"""
import torch
from recbole.trainer import KGATTrainer, Trainer
from recbole.utils import KGDataLoaderState

KG_SCHEDULES = ("alternating", "joint")


class MultiKG4RecTrainer(KGATTrainer):
    """Multi-KG4Rec's schedule, ``kg_schedule`` in the config:

    * ``alternating`` (default, KGAT's): each epoch one pass of BPR batches (Eq. 12), one pass of TransR
      batches (Eq. 2);
    * ``joint``: each batch carries a BPR and a TransR mini-batch and their losses are summed (Eq. 13).

    Either way the knowledge-aware attention (Eq. 8) is recomputed without gradient after each epoch
    (``model.update_attentive_A``), and both losses are logged.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.kg_schedule = config["kg_schedule"] or "alternating"
        if self.kg_schedule not in KG_SCHEDULES:
            raise ValueError(f"config 'kg_schedule': {self.kg_schedule!r} is not one of {list(KG_SCHEDULES)}")

    def _joint_loss(self, interaction):
        return self.model.calculate_loss(interaction), self.model.calculate_kg_loss(interaction)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.kg_schedule == "alternating":
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        if not self.config["single_spec"]:
            train_data.knowledge_shuffle(epoch_idx)
        train_data.set_mode(KGDataLoaderState.RSKG)
        losses = Trainer._train_epoch(self, train_data, epoch_idx, loss_func=self._joint_loss,
                                      show_progress=show_progress)
        self.model.eval()
        with torch.no_grad():
            self.model.update_attentive_A()
        return losses
from recbole_mkg.trainer_pretrain import CrossGMMITrainer, MKGATTrainer  # noqa: E402,F401  (looked up by name)
