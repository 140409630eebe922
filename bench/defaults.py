"""The embedded defaults, as data: the default and ``--quick`` grids (unions of small product grids, each a
dict of axis -> values, chosen to run in a few minutes on a 2-core CPU machine). The only place in ``bench/``
that names forms and models; an axis a sub-grid does not name takes the axis's default
(``bench.grid.AXIS_TABLE``).
"""
import impls

# asv and pytest-benchmark time the default grid at one torch thread, as ``linbench ab --threads 1``: with
# another process busy on one of 2 cores, a cell at 2 threads waits for that core at every parallel region
# (a step read 2-100x slower). LINBENCH_THREADS=1,2 adds other counts, as other cells (t1, t2).
FRONT_END_THREADS = [1]

ALL_FORMS = [f for f in impls.FORM_MODULES if f != "ddp"]  # one process each; ddp has its own sub-grid
DEFAULT_GRID = [
    # every form of the chapter-3 models on in-memory loaders, at the book's batch sizes
    dict(model=["linreg"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident", "tensor", "torchvision"],
         workers=[0], batch_size=[10]),
    dict(model=["softmax"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident", "tensor"], workers=[0],
         batch_size=[256]),
    # the seeds' pipeline and its alternatives across worker counts (the baseline cell is here)
    dict(model=["softmax"], form=["module"], device=["cpu", "cuda"], loader=["torchvision", "tensor"],
         workers=[0, 2, 4], batch_size=[256]),
    # throughput against batch size
    dict(model=["softmax"], form=["vectorized", "module", "compiled"], device=["cpu", "cuda"], loader=["resident"],
         workers=[0], batch_size=[64, 1024, 4096]),
    # the d2l 4.2 MLP: every form at the book's batch size, and the seeds' pipeline (its baseline cell)
    dict(model=["mlp"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident"], workers=[0], batch_size=[256]),
    dict(model=["mlp"], form=["module"], device=["cpu", "cuda"], loader=["torchvision"], workers=[4], batch_size=[256]),
    # data-parallel scaling: one rank and two, one thread each (2 cores), NCCL where there are 2 GPUs
    dict(model=["softmax"], form=["ddp"], device=["cpu", "cuda"], loader=["resident"], workers=[0], batch_size=[256],
         threads=[1], world_size=[1, 2]),
]
QUICK_GRID = [
    dict(model=["linreg"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident"], workers=[0], batch_size=[10]),
    dict(model=["linreg"], form=["module"], device=["cpu"], loader=["torchvision"], workers=[0], batch_size=[10]),
    dict(model=["softmax"], form=ALL_FORMS, device=["cpu", "cuda"], loader=["resident"], workers=[0],
         batch_size=[256]),
    dict(model=["softmax"], form=["module"], device=["cpu"], loader=["torchvision"], workers=[4], batch_size=[256]),
]

# The short GPU check (bench/commands/gpu_check.py): its model; the forms whose epochs it compares bit for bit (each
# against the first), and the forms whose resident epochs it times (each against the first)
GPU_CHECK_MODEL = "softmax"
GPU_CHECK_EPOCH_FORMS = ("cuda", "cuda_graph", "cuda_epoch", "cuda_cluster")
GPU_CHECK_FIGURE_FORMS = ("module", "compiled", *GPU_CHECK_EPOCH_FORMS, "triton")
# the extension's epoch kernels the short GPU check feeds a bad label and a bad index, each with the form that runs it
GPU_CHECK_NAN_KERNELS = {"softmax_epoch": "cuda_epoch", "softmax_cluster_epoch": "cuda_cluster"}
