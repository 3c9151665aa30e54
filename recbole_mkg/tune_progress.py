"""A sweep's progress bar: epochs run out of the sweep's epoch budget, as RecBole shows its batches.

Ray Tune runs quiet here (``verbose=0``: its status table would scroll every trial's config on every
report); without a bar, a sweep of trials that take minutes per epoch shows nothing for hours.
:class:`SweepProgress` is a Ray Tune callback in the driver: the bar's total is trials x epoch cap; every
validation report advances it by the epochs it covers; a trial that ends before its cap (stopped by ASHA,
early stopping, an error) takes its unused epochs out of the total. Its postfix: trials done, running,
failed, and the best validation metric so far with its trial.
"""
from ray.tune import Callback
from tqdm import tqdm


class SweepProgress(Callback):
    """``tqdm`` bar of a sweep. ``epoch_key`` / ``score_key``: the reports' epoch and validation-score fields;
    ``recorded``: trial id -> epochs it ran before (a resumed sweep: from the trials' state files)."""

    def __init__(self, n_trials, max_epochs, metric_name, mode, epoch_key, score_key, recorded=None, file=None,
                 disable=False):
        self.max_epochs, self.metric_name, self.mode = int(max_epochs), metric_name, mode
        self.epoch_key, self.score_key = epoch_key, score_key
        self.epochs = dict(recorded or {})  # trial id -> epochs reported
        done_epochs = sum(min(e, self.max_epochs) for e in self.epochs.values())
        self.ended, self.failed, self.active = set(), set(), set()  # active: trials that reported in this run
        self.best = None  # (score, trial id)
        budget = int(n_trials) * self.max_epochs
        self._bar_args = dict(total=budget, initial=min(int(done_epochs), budget), desc="sweep", unit="epoch",
                              file=file, disable=disable, dynamic_ncols=True, leave=True)
        self._bar = None

    @property
    def bar(self):
        """The ``tqdm`` bar, made at its first use (in the driver, once the sweep runs)."""
        if self._bar is None:
            self._bar = tqdm(**self._bar_args)
        return self._bar

    def __getstate__(self):  # Ray may pickle the run config with its callbacks: not the bar (a terminal handle)
        state = dict(self.__dict__, _bar=None)
        state["_bar_args"] = dict(self._bar_args, file=None)
        return state

    def _postfix(self):
        running = len(self.active - self.ended)
        best = "-" if self.best is None else f"{self.best[0]:.4f} ({self.best[1]})"
        self.bar.set_postfix_str(f"trials done {len(self.ended) - len(self.failed)}, running {running}, "
                                 f"failed {len(self.failed)}, best valid {self.metric_name} {best}", refresh=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch, score = result.get(self.epoch_key), result.get(self.score_key)
        if epoch is None or trial.trial_id in self.ended:
            return
        self.active.add(trial.trial_id)
        before = self.epochs.get(trial.trial_id, 0)
        if epoch > before:
            self.bar.update(min(epoch, self.max_epochs) - min(before, self.max_epochs))
            self.epochs[trial.trial_id] = epoch
        if score is not None:
            better = self.best is None or (score > self.best[0] if self.mode == "max" else score < self.best[0])
            if better:
                self.best = (float(score), trial.trial_id)
        self._postfix()

    def _end(self, trial, failed=False):
        if trial.trial_id in self.ended:
            return
        self.ended.add(trial.trial_id)
        if failed:
            self.failed.add(trial.trial_id)
        unused = self.max_epochs - min(self.epochs.get(trial.trial_id, 0), self.max_epochs)
        if unused:  # stopped before its cap: the sweep's budget shrinks by what it will not run
            self.bar.total -= unused
        self._postfix()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, failed=True)

    def on_experiment_end(self, trials, **info):
        """The budget that ran is the whole of it now (a resumed sweep's earlier trials never reported here)."""
        self.bar.total = self.bar.n
        self._postfix()
        self.bar.close()
