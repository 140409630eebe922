"""Models as specs: a model is one spec module, and every tool picks it up from there.

A fourth model is written here as a temporary spec module outside the tree (named in ``LINBENCH_MODELS``) and
runs through ``linbench check`` and one timed cell of ``linbench run`` in its module form, with no file under
``bench/`` or ``impls/`` touched. The MLP's spec: shapes, init, the oracle's hand-written backpropagation
against autograd, its cost.
"""
import csv
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

from impls.models import MODELS

ROOT = Path(__file__).resolve().parents[1]

TOY = '''
"""A toy fourth model: two linear layers, no activation, on synthetic data of its own."""
import torch

from impls.models import ModelSpec, Synthetic


def make(seed, n):
    g = torch.Generator().manual_seed(seed)
    X = torch.normal(0.0, 1.0, size=(n, 3), generator=g)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 + torch.normal(0.0, 0.01, size=(n, 1), generator=g)


SPEC = ModelSpec(name="twolayer", summary="two linear layers on synthetic data (a test's toy)",
                 data=Synthetic("synthetic 3 -> 1", make, 500, 100, 3), widths=(3, 4, 1),
                 names=("A", "a", "B", "c"), loss="squared", lr=0.05, batch_size=10, epochs=2,
                 baseline=dict(form="module", device="cpu", loader="torchvision", workers=0))
'''


def linbench(tmp_path, *args) -> subprocess.CompletedProcess:
    """``linbench ARGS`` in a fresh process that knows the toy model (its spec module on the path, named in
    LINBENCH_MODELS)."""
    (tmp_path / "toy_model.py").write_text(TOY)
    env = {**__import__("os").environ, "PYTHONPATH": f"{ROOT}:{tmp_path}", "LINBENCH_MODELS": "toy_model"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_fourth_model_from_its_spec_alone_runs_through_the_gate_and_a_timed_cell(tmp_path):
    listed = linbench(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    toy = [line.split() for line in listed.stdout.splitlines() if line.startswith("twolayer ")]
    assert ["twolayer", "module", "cpu", "fp32", "28", "yes"] in toy
    assert any(row[:2] == ["twolayer", "cuda"] and "one dense layer" in " ".join(row) for row in toy)

    checked = linbench(tmp_path, "check", "--models", "twolayer", "--forms", "module", "--steps", "5")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "twolayer" in checked.stdout and "pass" in checked.stdout and "fail" not in checked.stdout

    ran = linbench(tmp_path, "run", "--models", "twolayer", "--forms", "module", "--devices", "cpu", "--loaders",
                   "resident", "--workers", "0", "--batch-sizes", "10", "--repeats", "1", "--no-curves", "--out",
                   str(tmp_path / "results"), "--no-report", "--no-progress")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    folder = next((tmp_path / "results").iterdir())
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [(r["model"], r["form"], r["status"]) for r in rows] == [("twolayer", "module", "ok")]
    assert float(rows[0]["samples_per_s"]) > 0 and float(rows[0]["epoch_s"]) > 0
    gate = list(csv.DictReader((folder / "gate.csv").open()))
    assert gate and {(g["model"], g["status"]) for g in gate} == {("twolayer", "pass")}
    for part in ("bench", "impls"):
        assert not any(p.name == "toy_model.py" for p in (ROOT / part).rglob("*.py"))


def test_an_unknown_model_module_is_one_line(tmp_path):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "LINBENCH_MODELS": "no_such_model_module"}
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no_such_model_module" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_mlp_oracle_backpropagates_as_autograd_does():
    spec = MODELS["mlp"]
    params = spec.init(3)
    assert {k: tuple(v.shape) for k, v in params.items()} == {"W1": (784, 256), "b1": (256,), "W2": (256, 10),
                                                               "b2": (10,)}
    assert float(params["W1"].std()) == pytest.approx(0.01, rel=0.05) and not params["b1"].any()
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(32, 784, generator=g, dtype=torch.float64), torch.randint(0, 10, (32,), generator=g)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    H = torch.relu(X @ leaves["W1"] + leaves["b1"])
    torch.nn.functional.cross_entropy(H @ leaves["W2"] + leaves["b2"], y).backward()
    loss, grads, _ = spec.grads(params, X, y)
    for name, leaf in leaves.items():
        torch.testing.assert_close(grads[name], leaf.grad, rtol=1e-10, atol=1e-13)


def test_cost_counts_every_gemm_of_every_layer():
    flops, bytes_ = MODELS["mlp"].cost(256)
    assert flops == 2 * 256 * (2 * 784 * 256 + 3 * 256 * 10) and bytes_ == 4 * 256 * 784
    assert MODELS["linreg"].cost(10) == (2 * 2 * 10 * 2, 4 * 10 * 3)


def test_no_model_is_named_in_the_harness_outside_docstrings_and_the_default_grids():
    """bench/ asks the spec: a model's name appears in no code or string of bench/ but docstrings, comments and
    the default grids (bench/defaults.py)."""
    names, found = set(MODELS), []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        if path.name == "defaults.py":
            continue
        tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
        skip = (tokenize.NL, tokenize.COMMENT)
        for i, tok in enumerate(tokens):
            before = next((t for t in reversed(tokens[:i]) if t.type not in skip), None)
            after = next((t for t in tokens[i + 1:] if t.type not in skip), None)
            docstring = (tok.type == tokenize.STRING and after is not None and after.type == tokenize.NEWLINE
                         and (before is None or before.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)))
            text = (tokenize.NAME, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING))
            if tok.type in text and not docstring:
                words = set(tok.string.replace("/", " ").replace("\"", " ").replace("'", " ").split())
                found += [f"{path.relative_to(ROOT)}:{tok.start[0]}: {w}" for w in words & names]
    assert found == []
