"""Epochs as a whole: the resident loader's epochs (orders made ahead, the same batches), the ``train_epoch``
hook (CellBench hands a form its epoch, the gate judges it), the ragged last batch met in warm-up, and the
cuda ops that gather their rows (CPU references here; the kernels on a GPU)."""
import pytest
import torch

import impls
from bench.gate.cases import as_epoch, epoch_runs, gate_batches, run_oracle
from bench.gate.check import check_form
from bench.grid import parse_label
from bench.loaders import EpochPermutation, Resident
from bench.timing.cell import CellBench, Settings
from impls import cuda as cuda_kernels
from impls.common import FP32
from impls.contract import Setup
from impls.models import init_params
from tests.test_kernels import op_args, skip_if_form_unavailable, small_batches

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
EPOCHS = {"linreg": cuda_kernels.linreg_epoch, "softmax": cuda_kernels.softmax_epoch}
GATHERS = {"linreg": cuda_kernels.linreg_gather_step, "softmax": cuda_kernels.softmax_gather_step}


def test_resident_epochs_keep_the_samplers_orders_made_ahead_or_not():
    X, y = torch.arange(50, dtype=torch.uint8).reshape(25, 2), torch.arange(25)
    ahead, now = Resident(X, y, 4, "cpu", seed=3), Resident(X, y, 4, "cpu", seed=3)
    ahead.prepare(2)
    assert len(ahead.ready) == 2
    sampler = EpochPermutation(25, seed=3)
    for _ in range(4):
        want = list(sampler)  # the DataLoader kinds' order of this epoch
        got_ahead, got_now = list(ahead), [b for b in now.next_epoch().batches()]
        for got in (got_ahead, got_now):
            assert [len(b[1]) for b in got] == [4] * 6 + [1]
            assert torch.cat([b[1] for b in got]).tolist() == want
            assert torch.equal(torch.cat([b[0] for b in got]), X[want].float() / 255)
    assert not ahead.ready


def test_a_gate_batch_sequence_becomes_resident_epochs():
    batches = gate_batches("softmax", 256, steps=3)  # 3 x 256, the ragged 96, then 1
    runs = epoch_runs(batches)
    assert [[len(b[1]) for b in run] for run in runs] == [[256, 256, 256, 96], [1]]
    epoch = as_epoch(runs[0], "cpu")
    assert epoch.X.dtype == torch.uint8 and epoch.divisor == 255.0  # pixels as the resident loader keeps them
    assert not torch.equal(epoch.order, torch.arange(len(epoch.order)))  # a real gather
    for (X, y), (want_X, want_y) in zip(epoch.batches(), runs[0]):
        assert torch.equal(X, want_X) and torch.equal(y, want_y)
    rows = as_epoch(epoch_runs(gate_batches("linreg", 10, steps=3))[0], "cpu")
    assert rows.X.dtype == torch.float32 and rows.divisor == 1.0


@pytest.mark.parametrize("model, form", [("linreg", "cuda_epoch"), ("softmax", "cuda_epoch"),
                                         ("softmax", "cuda_cluster")])
def test_the_gate_judges_train_epoch(model, form):
    batches = gate_batches(model, 64 if model == "softmax" else 10, steps=3)
    params = init_params(model)
    reference = run_oracle(model, batches, params)
    good = impls.form_class(model, form)  # on CPU tensors: the ops' CPU reference
    assert check_form(model, form, "cpu", batches, params, reference, good).status == "pass"

    class SkipsTheLastStep(good):
        def train_epoch(self, data):
            return super().train_epoch(replace_order(data, data.order[: -(len(data.order) % data.batch_size or 1)]))

    result = check_form(model, form, "cpu", batches, params, reference, SkipsTheLastStep)
    assert result.status == "fail" and "train_epoch: " in result.reason, result.reason


def replace_order(data, order):
    from dataclasses import replace
    return replace(data, order=order)


class Recording:
    """A form wrapped to record the batch sizes its steps see, and the epochs it is handed whole."""

    def __init__(self, form, owns: bool):
        self.form, self.sizes, self.epochs = form, [], []
        if owns:
            self.train_epoch = self._train_epoch

    def step(self, X, y):
        self.sizes.append(len(y))
        return self.form.step(X, y)

    def _train_epoch(self, data):
        self.epochs.append(len(data.order))
        return torch.stack([torch.as_tensor(self.step(X, y)) for X, y in data.batches()])

    def __getattr__(self, name):
        return getattr(self.form, name)


@pytest.mark.parametrize("owns", [False, True])
def test_cellbench_hands_a_resident_epoch_to_a_form_that_owns_it(monkeypatch, owns):
    build = impls.build
    monkeypatch.setattr(impls, "build", lambda *a, **k: Recording(build(*a, **k), owns))
    bench = CellBench(parse_label("linreg/module/cpu/resident/w0/b64/t1"), Settings(seconds=0.05, repeats=2, most=3))
    form = bench.form
    assert bench.owns_epoch is owns
    bench.warm()  # 1000 samples: 15 batches of 64 and a ragged 40
    assert 40 in form.sizes  # the ragged batch size is met untimed
    assert form.epochs == ([1000] if owns else [])
    assert len(bench.loader.ready) >= 3  # the orders of the timed epochs are made
    seen = len(form.sizes)
    bench.epoch_s()
    assert set(form.sizes[seen:]) == {64, 40} and bench.samples == 1000
    assert (len(form.epochs) >= 3 and set(form.epochs) == {1000}) if owns else not form.epochs


@pytest.mark.parametrize("model", EPOCHS)
def test_gather_ops_refuse_bad_indices_and_labels_on_cpu(model):
    weight, b, X, y, lr = op_args(model, 8, "cpu")
    for idx, message in [(torch.tensor([0, 8]), r"idx must be in 0\.\.7, got 0\.\.8"),
                         (torch.tensor([], dtype=torch.int64), r"idx must be \(n,\) with n >= 1"),
                         (torch.tensor([0, 1], dtype=torch.int32), "idx must be torch.int64")]:
        with pytest.raises(ValueError, match=message):
            GATHERS[model](weight, b, X, y, idx, 1.0, lr)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        EPOCHS[model](weight, b, X, y, torch.arange(8), 0, 1.0, lr)
    if model == "softmax":
        y[3] = 10
        with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
            GATHERS[model](weight, b, X, y, torch.tensor([2, 3]), 1.0, lr)
        GATHERS[model](weight, b, X, y, torch.tensor([2, 4]), 1.0, lr)  # only the rows it takes count


@pytest.mark.parametrize("model", EPOCHS)
def test_gather_and_epoch_ops_pass_opcheck(model):
    weight, b, X, y, lr = op_args(model, 16, "cpu")
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    ops = [(GATHERS[model], (weight, b, X, y, order[:5], 1.0, lr)),
           (EPOCHS[model], (weight, b, X, y, order, 5, 1.0, lr))]
    if model == "softmax":
        ops.append((cuda_kernels.softmax_cluster_epoch, (weight, b, X, y, order, 5, 1.0, lr)))
    for op, args in ops:
        results = torch.library.opcheck(op._opoverload, args, test_utils=tests)
        assert set(results.values()) == {"SUCCESS"}, results


# -- GPU only -------------------------------------------------------------------------------------

def pixel_args(model, n, device, seed=0):
    """``op_args`` with softmax's X as uint8 pixels (divisor 255), as the resident loader keeps them."""
    weight, b, X, y, lr = op_args(model, n, "cpu", seed)
    divisor = 1.0
    if model == "softmax":
        X, divisor = (X * 255).round().to(torch.uint8), 255.0
    return [t.to(device) for t in (weight, b, X, y, lr)], divisor


def test_the_cluster_epoch_declines_what_it_cannot_launch_before_any_kernel():
    """The checks a cluster launch could fail are made in Python first: below sm_90, a batch whose slices do not
    fit a CTA's shared memory; linreg (no cluster kernel) is declined by the form."""
    from types import SimpleNamespace

    h100 = SimpleNamespace(name="H100", major=9, minor=0, shared_memory_per_block_optin=227 * 1024)
    a100 = SimpleNamespace(name="A100", major=8, minor=0, shared_memory_per_block_optin=163 * 1024)
    W, X = torch.empty(784, 10), torch.empty(60000, 784, dtype=torch.uint8)
    assert cuda_kernels.cluster_problem(h100, W, X, 256, 60000) is None
    assert "sm_90" in cuda_kernels.cluster_problem(a100, W, X, 256, 60000)
    assert "shared memory" in cuda_kernels.cluster_problem(h100, W, X, 4096, 60000)
    assert cuda_kernels.cluster_problem(h100, W, X, 4096, 100) is None  # an epoch of 100 rows: batches of 100
    assert "cross-entropy" in impls.form_class("linreg", "cuda_cluster").unsupported(impls.MODELS["linreg"])


@needs_gpu
@pytest.mark.parametrize("model", EPOCHS)
@pytest.mark.parametrize("form", ["cuda", "cuda_graph", "cuda_epoch", "cuda_cluster", "triton"])
def test_an_epoch_on_the_gpu_matches_the_cpu_reference(model, form):
    skip_if_form_unavailable(model, form)
    for rows, batch_size in ((300, 64), (257, 256), (1000, 10), (5, 7)):
        (weight, b, X, y, lr), divisor = pixel_args(model, rows, "cpu", seed=rows)
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(rows))
        instance = impls.build(model, form, {"w" if model == "linreg" else "W": weight.double(), "b": b.double()},
                               Setup(float(lr), "cuda"))
        want = EPOCHS[model](weight, b, X, y, order, batch_size, divisor, lr)  # weight and b: the final state
        data = as_epoch([(X[order].float() / divisor, y[order])], "cuda")
        data.batch_size = batch_size
        got = instance.train_epoch(data)
        torch.testing.assert_close(got.cpu(), want, rtol=FP32.rtol, atol=FP32.atol,
                                   msg=lambda m, rows=rows, batch_size=batch_size: f"{form} {model} rows={rows} "
                                                                                   f"b={batch_size}: {m}")
        for name, value in instance.state().items():
            torch.testing.assert_close(value, (weight if name != "b" else b), rtol=FP32.rtol, atol=FP32.atol)


@needs_gpu
@pytest.mark.parametrize("model", EPOCHS)
def test_the_gpu_epoch_forms_agree_bit_for_bit(model):
    """Two runs of each epoch form give the same losses and weights bit for bit, and the forms that run the ``cuda``
    form's sums (its graph, one kernel an epoch, one cluster an epoch) give the ``cuda`` form's bits; a graph
    replayed on a second order too."""
    (weight, b, X, y, lr), divisor = pixel_args(model, 1000, "cuda", seed=3)
    orders = [torch.randperm(1000, generator=torch.Generator().manual_seed(s)).cuda() for s in (1, 2)]
    runs = {}
    for form in ("cuda", "cuda_graph", "cuda_epoch", *(("cuda_cluster",) if model == "softmax" else ()), "triton"):
        skip_if_form_unavailable(model, form)
        for run in range(2):
            instance = impls.build(model, form, {"w" if model == "linreg" else "W": weight.double().cpu(),
                                                 "b": b.double().cpu()}, Setup(float(lr), "cuda"))
            data = [as_epoch([(X.float() / divisor, y)], "cuda") for _ in orders]
            losses = []
            for d, order in zip(data, orders):
                d.order, d.batch_size = order, 64
                losses.append(instance.train_epoch(d))
            runs[form, run] = (torch.cat(losses).cpu(), instance.state())
        assert torch.equal(runs[form, 0][0], runs[form, 1][0]), f"{form}: two runs differ"
        assert all(torch.equal(v, runs[form, 1][1][k]) for k, v in runs[form, 0][1].items()), form
    for form in ("cuda_graph", "cuda_epoch", "cuda_cluster"):
        if (form, 0) in runs:
            assert torch.equal(runs[form, 0][0], runs["cuda", 0][0]), f"{form}'s losses differ from cuda's"
            assert all(torch.equal(v, runs["cuda", 0][1][k]) for k, v in runs[form, 0][1].items()), form


@needs_gpu
@pytest.mark.parametrize("op", ["gather", "epoch", "cluster"])
@pytest.mark.parametrize("bad", ["label", "index"])
def test_a_bad_label_or_index_on_the_gpu_makes_the_loss_and_the_weights_nan(op, bad):
    skip_if_form_unavailable("softmax", "cuda_cluster" if op == "cluster" else "cuda")
    (W, b, X, y, lr), divisor = pixel_args("softmax", 64, "cuda")
    order = torch.arange(64, device="cuda")
    if bad == "label":
        y[5] = 10
    else:  # the kernels are the last line: the ops refuse a bad index on the host, so call the extension itself
        order[5] = 64
    ops = cuda_kernels.extension() if bad == "index" else cuda_kernels
    if op == "gather":
        loss = ops.softmax_gather_step(W, b, X, y, order, divisor, lr)
    else:
        loss = getattr(ops, "softmax_cluster_epoch" if op == "cluster" else "softmax_epoch")(W, b, X, y, order, 32,
                                                                                              divisor, lr)
    assert torch.isnan(loss).any().item() and torch.isnan(W).any().item()


@needs_gpu
def test_an_epoch_on_the_gpu_does_not_sync():
    skip_if_form_unavailable("softmax", "cuda_epoch")
    from tests.test_kernels import sleep_cycles_for
    instance = impls.build("softmax", "cuda_epoch", init_params("softmax"), Setup(0.1, "cuda"))
    (X, y), = small_batches("softmax", [1024])
    data = as_epoch([(X, y)], "cuda")
    data.batch_size = 256
    instance.train_epoch(data)  # builds the kernels
    cycles = sleep_cycles_for(100.0)
    torch.cuda.synchronize()
    torch.cuda._sleep(cycles)
    losses = instance.train_epoch(data)
    assert not torch.cuda.current_stream().query(), "the sleep ended before the epoch returned"
    assert losses.shape == (4,) and torch.isfinite(losses).all().item()


def test_the_python_launch_checks_use_the_kernels_own_constants():
    """impls/cuda.py's copies of fused_step.cu's sizes (the checks made before a launch) are the source's."""
    import re

    source = cuda_kernels.SOURCE.read_text()
    for name, value in [("MAX_OUT", cuda_kernels.MAX_OUT), ("THREADS", cuda_kernels.THREADS),
                        ("SMEM_RESERVED", cuda_kernels.SMEM_RESERVED)]:
        (text,) = re.findall(rf"constexpr int {name} = ([^;]+);", source)
        assert eval(text, {}) == value, name  # e.g. "40 * 1024"
    assert "return ((d + 31) / 32 + 15) / 16 * 16;" in source  # chunk_of, as cuda.chunk_of computes it
    assert [cuda_kernels.chunk_of(d) for d in (1, 2, 784, 4096)] == [16, 16, 32, 128]
