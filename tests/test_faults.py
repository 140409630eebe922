"""Faults a user or the environment can cause: each ends in one line (``linbench: error: ...``, exit 2;
130 for an interrupt), keeps every finished cell byte for byte, and leaves a folder ``--resume`` completes.

Kinds: bad flags, bad data, a full disk (ENOSPC injected in-process; RLIMIT_FSIZE in a child, which
works without root), damaged run folders, signals (SIGINT, SIGTERM, SIGKILL during the gate, after a
cell, inside a write) and concurrent runs. The grid is tiny (linreg, 2 to 4 cells) so the module is quick.
"""
import csv
import errno
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import cli
from bench.data import DEBIAN_DIR, fashion_mnist_available
from bench.grid import AXES
from bench.report.analysis import derived, headlines
from bench.runs import interrupt
from bench.runs.folder import LOCK, Lock
from bench.runs.run_folder import META, RESULTS, SAMPLES, SCHEMA, read_meta
from bench.runs.store import Store
from tests.conftest import default_sigint, run_cli

TINY = ["--models", "linreg", "--forms", "vectorized", "--devices", "cpu", "--loaders", "resident", "--workers", "0",
        "--no-curves", "--no-report", "--repeats", "1", "--no-progress"]
TWO = [*TINY, "--batch-sizes", "10,20"]
THREE = [*TINY, "--batch-sizes", "10,20,30"]
ROOT = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------------
def spawn(*args, cwd, env=None, **kw) -> subprocess.Popen:
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


def linbench(*args, cwd, **kw) -> subprocess.Popen:
    return spawn("-m", "bench.cli", *args, cwd=cwd, **kw)


def one_line(err: str, start: str = "linbench: error:") -> str:
    """The one message line (progress lines "run ..." and warnings, wrapped or not, aside); never a traceback."""
    assert "Traceback" not in err, err
    lines, aside = [], False
    for line in err.splitlines():
        if line.startswith(("run ", "linbench: warning:")) or (aside and line.startswith(" ")):
            aside = True
        else:
            aside = False
            lines.append(line)
    assert len(lines) == 1 and lines[0].startswith(start), err
    return lines[0]


def lines_by_cell(folder: Path, name: str = RESULTS) -> dict:
    """Each cell's raw CSV lines (a cell has one results line and many samples lines)."""
    path = folder / name
    out: dict = {}
    if path.exists():
        for line in path.read_text().splitlines()[1:]:
            out.setdefault(tuple(next(csv.reader([line]))[:len(AXES)]), []).append(line)
    return out


def ok_rows(folder: Path) -> dict:
    path = folder / RESULTS
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    return {tuple(r[a] for a in AXES): r for r in rows if r["status"] == "ok" and r["samples_per_s"]}


def assert_resumes(folder: Path, capsys, kept: dict, expected: set) -> None:
    """``--resume`` completes the grid with exactly ``expected`` cells; the ``kept`` lines are unchanged."""
    samples = lines_by_cell(folder, SAMPLES)
    rc, err = run_cli(capsys, "run", "--resume", str(folder), "--no-progress", "--no-report")
    assert rc == 0, err
    after = lines_by_cell(folder)
    assert set(after) == expected and all(r["status"] == "ok" for r in ok_rows(folder).values())
    for key, lines in kept.items():
        assert after[key] == lines, key
        assert set(samples.get(key, [])) <= set(lines_by_cell(folder, SAMPLES)[key])
    assert read_meta(folder)["complete"] is True
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary or lock files left"


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished two-cell run folder (copy it before damaging it)."""
    out = tmp_path_factory.mktemp("done")
    proc = linbench("run", *TWO, "--out", str(out / "results"), cwd=out)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return next((out / "results").iterdir())


@pytest.fixture
def copy(done, tmp_path) -> Path:
    return Path(shutil.copytree(done, tmp_path / done.name))


# -- flags -----------------------------------------------------------------------------------------
BAD_FLAGS = [
    ["run", "--threads", "-1"], ["run", "--threads", "0"], ["run", "--forms", ""], ["run", "--batch-sizes", ","],
    ["run", "--devices", ""], ["run", "--workers", " , "], ["run", "--models", ""], ["run", "--batch-sizes", "10,x"],
    ["run", "--repeats", "0"], ["check", "--forms", ""], ["check", "--batch-sizes", ","],
    ["run", "--resume", "results/x", "--forms", "module"], ["run", "--resume", "results/x", "--quick"],
    ["run", "--resume", "results/x", "--repeats", "2"], ["run", "--resume", "results/x", "--out", "elsewhere"],
    ["run", "--resume", "results/x", "--threads", "1"], ["report", "--threshold", "2", "results/x"],
]


@pytest.mark.parametrize("args", BAD_FLAGS, ids=" ".join)
def test_bad_flag_is_one_line_and_creates_nothing(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, err = run_cli(capsys, *args)
    assert rc == 2
    one_line(err)
    assert not list(tmp_path.iterdir()), "a bad flag must not leave a run folder"


def test_repeated_names_are_checked_once():
    args = cli.make_parser().parse_args(["check", "--forms", "module,module", "--batch-sizes", "10,10"])
    assert args.forms == ["module"] and args.batch_sizes == [10]
    args = cli.make_parser().parse_args(["run", "--forms", "module, module,loop", "--threads", "1,1"])
    assert args.forms == ["module", "loop"] and args.threads == [1]


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "results").write_text("not a folder")
    rc, err = run_cli(capsys, "run", *TWO, "--out", str(tmp_path / "results"))
    assert rc == 2 and "a file is in the way" in one_line(err)


# -- data ------------------------------------------------------------------------------------------
@pytest.fixture
def prepared(tmp_path_factory):
    reason = fashion_mnist_available()
    if reason:
        pytest.skip(f"real Fashion-MNIST unavailable: {reason}")
    from bench.data import fashion_mnist_root

    return fashion_mnist_root() / "FashionMNIST" / "raw"


def test_data_cache_that_is_a_file(tmp_path, monkeypatch, capsys, prepared):
    (tmp_path / "cache").write_text("a file")
    monkeypatch.setenv("LINBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("bench.data._validated", lambda root: False)  # as if nothing were prepared yet
    rc, err = run_cli(capsys, "data", "--data-dir", str(prepared))
    assert rc == 2 and "LINBENCH_CACHE" in one_line(err)


def test_data_cache_that_cannot_be_written(tmp_path, monkeypatch, capsys, prepared):
    (tmp_path / "flat").mkdir()  # the 4 files side by side: not torchvision's layout, so they are prepared
    for p in prepared.iterdir():
        (tmp_path / "flat" / p.name).symlink_to(p)
    monkeypatch.setenv("LINBENCH_CACHE", "/proc/linbench-cache")  # unwritable, even for root
    rc, err = run_cli(capsys, "data", "--data-dir", str(tmp_path / "flat"))
    assert rc == 2 and "cannot write the data cache" in one_line(err)


@pytest.mark.parametrize("where", ["data-dir", "cache"])
def test_unreadable_idx_file_is_one_line(where, tmp_path, monkeypatch, capsys, prepared):
    raw = tmp_path / "d" / "FashionMNIST" / "raw" if where == "data-dir" else tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in prepared.iterdir():
        (raw / p.name).symlink_to(p)
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte").symlink_to("/proc/self/mem")  # a file that fails to read (EIO), even for root
    monkeypatch.setenv("LINBENCH_CACHE", str(tmp_path))
    rc, err = run_cli(capsys, "data", *(["--data-dir", str(tmp_path / "d")] if where == "data-dir" else []))
    assert rc == 2 and "train-labels-idx1-ubyte: unreadable" in one_line(err)


def _fsize_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
    return apply


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="no Fashion-MNIST IDX files to prepare from")
def test_disk_full_while_data_is_prepared_leaves_no_partial_file(tmp_path):
    env = {**os.environ, "LINBENCH_CACHE": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = linbench("data", cwd=tmp_path, env=env, preexec_fn=_fsize_limit(1 << 20))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "File too large" in one_line(err)
    raw = tmp_path / "cache" / "data" / "FashionMNIST" / "raw"
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "a partial temporary file was left"


# -- disk full mid-run and while reporting --------------------------------------------------------
def _fail_replace(monkeypatch, name: str, after: int = 0):
    """``os.replace`` onto ``name`` fails with ENOSPC from its ``after + 1``-th call on."""
    real, calls = os.replace, []

    def replace(src, dst, *a, **kw):
        if Path(dst).name == name:
            calls.append(dst)
            if len(calls) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, "replace", replace)


def test_disk_full_mid_run_keeps_finished_cells(tmp_path, monkeypatch, capsys):
    _fail_replace(monkeypatch, RESULTS, after=2)  # the gate's write and the first cell's, then full
    rc, err = run_cli(capsys, "run", *TWO, "--out", str(tmp_path))
    assert rc == 2 and "the disk is full" in one_line(err)
    monkeypatch.undo()
    folder = next(tmp_path.iterdir())
    kept = lines_by_cell(folder)
    assert len(kept) == 1 and not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != LOCK]
    assert_resumes(folder, capsys, kept, _expected(folder))


def test_disk_full_at_the_start_is_one_line(tmp_path, monkeypatch, capsys):
    _fail_replace(monkeypatch, META)
    rc, err = run_cli(capsys, "run", *TWO, "--out", str(tmp_path))
    assert rc == 2 and "the disk is full" in one_line(err)
    assert not list(tmp_path.iterdir()), "a folder that could not be made whole is not left half made"


def test_disk_full_while_the_report_is_written(copy, tmp_path, monkeypatch, capsys):
    _fail_replace(monkeypatch, "index.html")
    rc, err = run_cli(capsys, "report", str(copy), "--out", str(tmp_path / "report"))
    assert rc == 2 and "index.html" in one_line(err)


def test_files_are_readable_by_all(done):
    for name in (RESULTS, META, SAMPLES):
        assert (done / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- damaged run folders ---------------------------------------------------------------------------
def test_binary_results_is_one_line_for_report_and_resume(copy, tmp_path, capsys):
    (copy / RESULTS).write_bytes(bytes(range(256)) * 8)
    rc, err = run_cli(capsys, "report", str(copy), "--out", str(tmp_path / "r"))
    assert rc == 2 and "not a linbench CSV file" in one_line(err)
    rc, err = run_cli(capsys, "run", "--resume", str(copy), "--no-report", "--no-progress")
    assert rc == 2 and "move it away" in one_line(err)
    (copy / RESULTS).unlink()  # the remedy the message gives: every cell re-run
    assert_resumes(copy, capsys, {}, _expected(copy))


def _expected(folder: Path) -> set:
    from bench.timing.runner import config_of

    _, cells = config_of(read_meta(folder), folder)
    return {tuple(str(v) for v in c.key()) for c in cells}


def test_text_in_a_metric_column(copy, tmp_path, capsys):
    frame = pd.read_csv(copy / RESULTS)
    frame["epoch_s"] = frame["epoch_s"].astype(object)
    frame.loc[1, "epoch_s"] = "fast"
    frame.to_csv(copy / RESULTS, index=False)
    kept = {k: v for i, (k, v) in enumerate(lines_by_cell(copy).items()) if i == 0}
    rc, err = run_cli(capsys, "report", str(copy), "--out", str(tmp_path / "r"))
    assert rc == 2 and "column epoch_s holds text" in one_line(err)
    assert_resumes(copy, capsys, kept, _expected(copy))  # the damaged cell is re-run


@pytest.mark.parametrize("damage", ["no config", "config without grid", "grid of text", "meta {}", "meta binary",
                                    "results lack columns"])
def test_damaged_folder_is_one_line(damage, copy, capsys):
    meta = json.loads((copy / META).read_text())
    if damage == "no config":
        del meta["config"]
    elif damage == "config without grid":
        del meta["config"]["grid"]
    elif damage == "grid of text":
        meta["config"]["grid"] = "everything"
    elif damage == "meta {}":
        meta = {}
    (copy / META).write_text(json.dumps(meta))
    if damage == "meta binary":
        (copy / META).write_bytes(b"\x00\xff" * 100)
    if damage == "results lack columns":
        (copy / RESULTS).write_text("model,form\nlinreg,vectorized\n")
    rc, err = run_cli(capsys, "run", "--resume", str(copy), "--no-report", "--no-progress")
    assert rc == 2
    one_line(err)
    assert not (copy / LOCK).exists()


def test_unknown_config_key_is_refused_and_a_retired_one_left_unset_is_not(copy, capsys):
    meta = json.loads((copy / META).read_text())
    meta["config"].update(from_the_future=1, threads=None)  # threads: a config key before it became an axis
    meta["complete"] = False
    (copy / META).write_text(json.dumps(meta))
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    rc, err = run_cli(capsys, "run", "--resume", str(copy), "--no-report", "--no-progress")
    line = one_line(err)
    assert rc == 2 and str(copy / META) in line and "does not know: from_the_future " in line, line
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before, "a refused folder is left as it was"
    del meta["config"]["from_the_future"]
    (copy / META).write_text(json.dumps(meta))
    assert_resumes(copy, capsys, lines_by_cell(copy), _expected(copy))


def test_row_cut_after_its_status_is_re_run(copy, capsys):
    lines = (copy / RESULTS).read_text().splitlines()
    head = lines[-1].split(",")
    status = head.index("ok")
    (copy / RESULTS).write_text("\n".join([*lines[:-1], ",".join(head[:status + 1])]) + "\n")
    kept = dict(list(lines_by_cell(copy).items())[:1])
    assert_resumes(copy, capsys, kept, _expected(copy))


def test_foreign_rows_are_dropped_and_the_run_is_not_complete_until_its_own_cells_are(copy, capsys):
    frame = pd.read_csv(copy / RESULTS)
    mine = frame.iloc[:1]
    foreign = pd.concat([frame.assign(form="module", batch_size=frame["batch_size"] + i) for i in range(1, 9)])
    pd.concat([mine, foreign]).to_csv(copy / RESULTS, index=False)
    kept = lines_by_cell(copy)
    kept = {k: v for k, v in kept.items() if k[1] == "vectorized"}
    rc, err = run_cli(capsys, "run", "--resume", str(copy), "--no-report", "--no-progress")
    assert rc == 0 and "dropped 16 row(s)" in err
    assert set(lines_by_cell(copy)) == _expected(copy)
    for key, lines in kept.items():
        assert lines_by_cell(copy)[key] == lines


def test_foreign_rows_not_finished_are_dropped_and_counted_too(copy, capsys):
    from bench.timing.runner import resume

    frame = pd.read_csv(copy / RESULTS)
    foreign = pd.concat([frame.assign(form="module", status="running"),  # a status of their own
                         frame.assign(model="mlp", epoch_s=math.nan),  # cut short
                         frame.assign(threads=frame["threads"] + 5, status="error", reason="")])  # no reason
    pd.concat([frame.iloc[:1], foreign]).to_csv(copy / RESULTS, index=False)
    capsys.readouterr()
    store, _, cells = resume(copy)
    store.unlock()
    assert capsys.readouterr().err == "linbench: warning: dropped 6 row(s) not of this run's grid\n"
    assert list(store.rows) == [cells[0].key()], "only the run's own finished row is kept"


def test_a_results_file_of_no_rows_reads_as_no_rows(copy):
    """As a run interrupted in its first cell leaves it: the header only (it was a traceback on --resume)."""
    from bench.runs.run_folder import read_results

    (copy / RESULTS).write_text((copy / RESULTS).read_text().splitlines()[0] + "\n")
    store = Store.load(copy)
    store.unlock()
    assert read_results(copy, repair=True).empty and store.rows == {}


def test_missing_results_temp_files_and_a_stale_lock_do_not_block_resume(copy, capsys):
    (copy / RESULTS).unlink()
    (copy / f".{RESULTS}.abc123").write_text("half a fi")
    (copy / LOCK).write_text("999999999\n")  # its holder is gone: the kernel lock went with it
    assert_resumes(copy, capsys, {}, _expected(copy))


def test_headline_without_the_baseline_says_no_nan(done):
    frame = derived(pd.read_csv(done / RESULTS))
    lines = headlines(frame)
    assert lines and not any("nan" in line for line in lines)
    assert any("no linreg speedups" in line for line in lines)


# -- concurrency ------------------------------------------------------------------------------------
def test_runs_created_in_the_same_second_get_their_own_folders(tmp_path):
    made, errors = [], []

    def create():
        try:
            store = Store.create(tmp_path, {"schema": SCHEMA, "run_id": "same-second", "config": {}})
            made.append(store.folder)
            store.unlock()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 8
    assert all(json.loads((f / META).read_text())["run_id"] == f.name for f in made)


def test_a_second_resume_of_a_folder_in_use_is_refused(copy, capsys):
    meta = json.loads((copy / META).read_text())
    meta["complete"] = False
    (copy / META).write_text(json.dumps(meta))
    lock = Lock(copy).acquire()
    try:
        proc = linbench("run", "--resume", str(copy), "--no-report", "--no-progress", cwd=copy.parent)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and f"in use by linbench pid {os.getpid()}" in one_line(err)
    finally:
        lock.release()
    assert_resumes(copy, capsys, lines_by_cell(copy), _expected(copy))


# -- signals -----------------------------------------------------------------------------------------
def _wait(proc, until, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if until():
            return True
        time.sleep(0.01)
    return False


def _folder(out: Path) -> Path | None:
    found = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    return found[0] if found else None


@pytest.mark.parametrize("moment", ["first second", "during the gate", "after a cell"])
def test_sigkill_at_any_moment_resumes_to_the_same_cells(moment, tmp_path, capsys):
    out = tmp_path / "results"
    proc = linbench("run", *THREE, "--out", str(out), cwd=tmp_path)
    if moment == "first second":  # most often before the folder exists: then nothing may be left half made
        time.sleep(1.0)
    elif moment == "during the gate":
        assert _wait(proc, lambda: _folder(out) is not None)
    else:
        assert _wait(proc, lambda: _folder(out) is not None and ok_rows(_folder(out)))
    proc.kill()
    proc.communicate()
    folder = _folder(out)
    if folder is None:  # killed before the folder appeared: nothing to resume, nothing half made
        assert not out.exists() or not [p for p in out.iterdir() if (p / META).exists() and not p.name[0] == "."]
        return
    assert read_meta(folder)["config"]["overrides"]["batch_size"] == [10, 20, 30]
    kept = {k: v for k, v in lines_by_cell(folder).items() if k in ok_rows(folder)}
    assert_resumes(folder, capsys, kept, _expected(folder))
    assert len(_expected(folder)) == 3


KILL_IN_WRITE = """
import os, signal, sys
from pathlib import Path
real, n = os.replace, []
def replace(src, dst, *a, **kw):
    if Path(dst).name == "results.csv":
        n.append(1)
        if len(n) == 3:  # the second cell's write: its temporary file is written, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
from bench import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_inside_a_write(tmp_path, capsys):
    out = tmp_path / "results"
    proc = spawn("-c", KILL_IN_WRITE, "run", *THREE, "--out", str(out), cwd=tmp_path)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    folder = _folder(out)
    assert [p for p in folder.iterdir() if p.name.startswith(f".{RESULTS}.")], "killed inside the write"
    kept = lines_by_cell(folder)
    assert len(kept) == 1
    assert_resumes(folder, capsys, kept, _expected(folder))


@pytest.mark.parametrize("sig,loader", [(signal.SIGINT, "resident"), (signal.SIGTERM, "tensor")])
def test_interrupt_keeps_finished_cells_in_one_line(sig, loader, tmp_path, capsys):
    out = tmp_path / "results"
    args = [*TWO, "--loaders", loader, "--workers", "1" if loader == "tensor" else "0"]
    proc = linbench("run", *args, "--out", str(out), cwd=tmp_path, preexec_fn=default_sigint)
    assert _wait(proc, lambda: _folder(out) is not None and ok_rows(_folder(out)))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    folder = _folder(out)
    if proc.returncode == 0:  # the signal came as the run ended
        return
    assert proc.returncode == 130, err
    assert "--resume" in one_line(err, "linbench: interrupted")
    kept = {k: v for k, v in lines_by_cell(folder).items() if k in ok_rows(folder)}
    assert kept
    assert_resumes(folder, capsys, kept, _expected(folder))


def _timing_with_workers(proc, out: Path, workers: int) -> bool:
    """The run's first cell is being timed: the gate is written and the cell's DataLoader workers are up."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return False
    return _folder(out) is not None and (_folder(out) / RESULTS).exists() and len(children) >= workers


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_mid_cell_is_an_interruption_not_an_error(sig, tmp_path, capsys):
    """SIGTERM to the whole job, as Slurm sends at a time limit, or Ctrl-C in a terminal: the DataLoader workers
    die of it too, and the cell they were feeding is not a result (no `error` row); the run ends as interrupted
    and --resume times the cell."""
    out = tmp_path / "results"
    args = [*TINY, "--quick", "--loaders", "torchvision", "--workers", "2", "--batch-sizes", "100"]
    proc = linbench("run", *args, "--out", str(out), cwd=tmp_path, start_new_session=True, preexec_fn=default_sigint)
    assert _wait(proc, lambda: _timing_with_workers(proc, out, 2)), proc.communicate()[1]
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in one_line(err, "linbench: interrupted; 0 of 1 cells kept")
    folder = _folder(out)
    assert pd.read_csv(folder / RESULTS).empty, "the cell cut short was written as a row"
    if sig == signal.SIGTERM:  # the same folder either way: resumed once, to keep the module quick
        assert_resumes(folder, capsys, {}, _expected(folder))


@pytest.mark.parametrize("error,expected", [
    (RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated. "), True),
    (RuntimeError("DataLoader worker (pid 7) is killed by signal: Interrupt. "), True),
    (RuntimeError("a rank ended without a result (process 0 terminated with signal SIGTERM)"), True),
    (RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. "), False),  # e.g. the OOM killer
    (ValueError("a form's own error"), False),
])
def test_what_counts_as_an_interruption(error, expected):
    assert interrupt.interrupted(error) is expected
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("raised while the interrupt unwound")  # noqa: B904 - the implicit context is the point
    except ValueError as e:
        assert interrupt.interrupted(e)


def test_list_into_a_closed_pipe(tmp_path):
    proc = linbench("list", cwd=tmp_path)
    proc.stdout.close()  # `linbench list | head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 141 and "Traceback" not in err and "BrokenPipe" not in err
