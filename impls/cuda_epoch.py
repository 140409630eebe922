"""The ``cuda_epoch`` form: a whole epoch of the ``cuda`` form's steps in one persistent kernel (impls/fused_step.cu).

At d2l's batch sizes an epoch is hundreds of steps of a few microseconds of work each (softmax at batch 256:
235 steps); launching them one by one, or replaying a graph per step, costs more than the work. Here the
resident loader's epoch (the split on the device, the epoch's order) goes to ``linbench::<model>_epoch``:
softmax as one cooperative launch whose blocks run every step (rows gathered by index and scaled in the
kernel, W staged in shared memory, a grid-wide barrier between the gradient and the update and after it),
linreg as one block looping over its steps. Sums run in a fixed order, so an epoch is deterministic, and its
steps are the ``cuda`` form's (the gate checks both against the oracle). Other loaders hand it batches, and it
steps through them as the ``cuda`` form does.
"""
from __future__ import annotations

import torch

from impls.cuda import CudaForm, linreg_epoch, softmax_epoch


class EpochForm(CudaForm):
    """The ``cuda_epoch`` form: one launch an epoch on the resident loader; the ``cuda`` form's step otherwise."""
    epoch_ops = {"squared": linreg_epoch, "cross_entropy": softmax_epoch}
    owns_epoch_kernel = True

    def train_epoch(self, data) -> torch.Tensor:
        X, y = self.epoch_args(data)
        return self.epoch_ops[self.spec.loss](self.weight, self.b, X, y, data.order, data.batch_size, data.divisor,
                                              self.lr)


FORM = EpochForm
