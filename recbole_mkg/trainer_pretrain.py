"""Trainers of CrossGMMI-DUKGLR (pre-training, then fine-tuning) and MKGAT (alternating rec / KG passes).

Both reuse RecBole's machinery: ``Trainer._train_epoch`` runs every pass (progress bars with
``show_progress``, NaN checks, gradient clipping), ``_generate_train_loss_output`` logs the losses, and
``Trainer.fit`` does the fine-tuning with validation, early stopping and checkpoints.
"""
import os
from time import time

from recbole.trainer import PretrainTrainer, Trainer
from recbole.utils import KGDataLoaderState, set_color

from recbole_mkg.model.alignment import PairBatches


class CrossGMMITrainer(PretrainTrainer):
    """Phase 1 (``pretrain``): InfoNCE epochs over anchor pairs (two KGs, or two augmented views of one),
    each logged as ``pre-training epoch ...`` with its loss, alignment Hits@1/10 and MRR on held-out pairs
    after every ``eval_step`` epochs; the encoder is saved to a file keyed by entity/relation token.
    Phase 2 (``finetune``): loads that file (or ``pretrained_path``), logs how many rows matched, and runs
    RecBole's ``fit`` with a fresh optimizer. ``train_stage: pretrain_finetune`` runs both in one go."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.pretrain_losses = []
        self.alignment_result = None
        self.pretrained_report = None

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        stage = self.model.train_stage
        path = self.config["pretrained_path"]
        if stage == "pretrain_finetune" and self.start_epoch > 0:
            # a fine-tuning that goes on from its progress file (recbole_mkg.run_progress): that file holds
            # the fine-tuned weights, so neither phase 1 nor the pre-trained file is needed again
            stage, path = "finetune", None
        if stage in ("pretrain", "pretrain_finetune"):
            path = self.pretrain(train_data, verbose, show_progress)
            if stage == "pretrain":
                if saved:  # so that evaluate(load_best_model=True) has a checkpoint to load
                    self._save_checkpoint(-1, verbose=verbose)
                return self.best_valid_score, self.best_valid_result
        if path:
            self.pretrained_report = report = self.model.load_pretrained(path)
            if verbose:
                self.logger.info(
                    set_color("fine-tuning from pre-trained weights", "blue") + f" {path}: matched "
                    f"{report['entity_rows_matched']} of {report['entity_rows']} entity rows, "
                    f"{report['relation_rows_matched']} of {report['relation_rows']} relation rows, "
                    f"{report['encoder_tensors_loaded']} of {report['encoder_tensors']} encoder tensors")
        elif verbose and self.start_epoch > 0:
            self.logger.info(f"fine-tuning goes on after epoch {self.start_epoch - 1}")
        elif verbose:
            self.logger.info("fine-tuning from scratch (no pretrained_path)")
        self.optimizer = self._build_optimizer()
        if hasattr(train_data, "set_mode"):
            train_data.set_mode(KGDataLoaderState.RS)
        return Trainer.fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def pretrain(self, train_data=None, verbose=True, show_progress=False):
        """Run phase 1 and save the pre-trained file; returns its path."""
        task, train_pairs, test_pairs = self.model.build_pretrain_task(self.config, self.logger)
        task.to(self.device)
        batches = PairBatches(len(train_pairs), self.config["pretrain_batch_size"], self.config["seed"])
        finetune_optimizer = self.optimizer
        self.optimizer = self._build_optimizer(params=task.parameters(), weight_decay=0,
                                               learning_rate=self.config["pretrain_learning_rate"])
        for epoch_idx in range(self.pretrain_epochs):
            start = time()
            task.train()
            # the class's pass, not the instance's: wrappers of a run's training epochs (timings, progress
            # files) are about the fine-tuning epochs, and phase 1's passes are not among them
            loss = Trainer._train_epoch(self, batches, epoch_idx, loss_func=task.loss, show_progress=show_progress)
            self.pretrain_losses.append(loss / len(batches))
            output = set_color("pre-training ", "pink") + self._generate_train_loss_output(
                epoch_idx, start, time(), loss / len(batches))
            self._add_train_loss_to_tensorboard(epoch_idx, loss / len(batches), tag="Loss/Pretrain")
            last = epoch_idx + 1 == self.pretrain_epochs
            if test_pairs is not None and len(test_pairs) and (last or (self.eval_step and (epoch_idx + 1) % self.eval_step == 0)):
                self.alignment_result = task.evaluate(test_pairs)
                output += ", " + set_color("alignment", "blue") + ": " + ", ".join(
                    f"{k}={v:.4f}" for k, v in self.alignment_result.items())
            if verbose:
                self.logger.info(output)
        path = self.config["pretrain_save_path"] or os.path.join(
            self.checkpoint_dir, f"{self.config['model']}-{self.config['dataset']}-pretrained.pth")
        self.model.save_pretrained(path, {"alignment": self.alignment_result, "pretrain_losses": self.pretrain_losses})
        if verbose:
            self.logger.info(set_color("saved pre-trained encoder", "blue") + f": {path} (fine-tune from it with "
                             f"--train_stage=finetune --pretrained_path={path})")
        self.optimizer = finetune_optimizer
        return path


class MKGATTrainer(Trainer):
    """MKGAT's alternating schedule: each epoch one pass of BPR batches (recommendation module), then one
    pass of KG batches (TransE of the KG-embedding module); both losses are logged."""

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if not self.config["single_spec"]:
            train_data.knowledge_shuffle(epoch_idx)
        train_data.set_mode(KGDataLoaderState.RS)
        rec_loss = super()._train_epoch(train_data, epoch_idx, show_progress=show_progress)
        train_data.set_mode(KGDataLoaderState.KG)
        kg_loss = super()._train_epoch(train_data, epoch_idx, loss_func=self.model.calculate_kg_loss,
                                       show_progress=show_progress)
        return rec_loss, kg_loss
