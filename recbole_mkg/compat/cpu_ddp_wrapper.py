"""RecBole's ``AbstractTrainer`` always wraps the model as ``DistributedDataParallel(model,
device_ids=[local_rank])`` (after ``convert_sync_batchnorm``), which torch refuses for a CPU module.

The fix builds the wrapper without ``device_ids`` (and without SyncBatchNorm, which is CUDA-only) when a
distributed run is on the CPU (gloo backend, see :class:`recbole_mkg.config.Config`); single-process and
CUDA runs keep RecBole's code. Tested by ``tests/test_ddp.py`` (2 processes, gloo).
"""
import torch


def apply():
    from recbole.trainer import trainer as recbole_trainer

    original = recbole_trainer.AbstractTrainer.__init__
    if getattr(original, "_mkg_cpu_ddp", False):
        return

    def __init__(self, config, model):
        if config["single_spec"] or config["device"].type != "cpu":
            return original(self, config, model)
        self.config = config
        self.model = model
        self.distributed_model = torch.nn.parallel.DistributedDataParallel(model)

    __init__._mkg_cpu_ddp = True
    recbole_trainer.AbstractTrainer.__init__ = __init__
