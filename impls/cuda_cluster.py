"""The ``cuda_cluster`` form: a softmax epoch on one thread-block cluster (impls/fused_step.cu, sm_90 and up).

The ``cuda_epoch`` form's cooperative kernel spreads each step over the whole GPU and meets at two grid-wide
barriers a step, each a round trip through global memory, and its blocks stage all of W again every step. Here
one cluster of 16 CTAs (8 where 16 do not fit) is persistent for the epoch, as Hopper's thread-block clusters
allow: each CTA keeps the rows of W of its 2 (or 4) of the 32 chunks of features in its shared memory for the
whole epoch, reads only its slice of the batch's rows, and the partial logits are reduced through distributed
shared memory, so a step is two cluster barriers and no global traffic but the rows, labels and indices read.
The sums are those of the ``cuda`` form's kernels in their order, so the epoch gives the ``cuda`` form's bits
(the gate judges it on both paths, as it does ``cuda_epoch``). Other loaders hand it batches, and it steps
through them as the ``cuda`` form does. Below sm_90 it declines with the reason.
"""
from __future__ import annotations

import torch

from impls.cuda import cluster_problem, softmax_cluster_epoch
from impls.cuda_epoch import EpochForm


class ClusterForm(EpochForm):
    """The ``cuda_cluster`` form: a softmax epoch on one thread-block cluster; the ``cuda`` form's step otherwise."""
    epoch_ops = {"cross_entropy": softmax_cluster_epoch}

    @classmethod
    def unsupported(cls, spec, setup=None) -> str | None:
        if spec.loss not in cls.epoch_ops:
            return f"its cluster kernel is written for the cross-entropy loss (softmax regression), not {spec.loss}"
        if reason := super().unsupported(spec, setup):
            return reason
        if setup is None or torch.device(setup.device).type != "cuda" or not torch.cuda.is_available():
            return None
        weight = torch.empty((spec.widths[0], spec.widths[-1]), device="meta")
        X = torch.empty((1, spec.widths[0]), dtype=torch.uint8, device="meta")
        return cluster_problem(torch.cuda.get_device_properties(torch.device(setup.device)), weight, X, 1, 1)


FORM = ClusterForm
