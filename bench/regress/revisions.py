"""The revisions ``linbench ab`` times: a revision resolved to its commit (checked to hold the worker that
times it) and checked out as a clean git worktree under ``.linbench/ab/<sha>``."""
from __future__ import annotations

import subprocess
from pathlib import Path

from bench import UserError
from bench.regress.ab_worker import WORKER_MODULES, worker_path


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise UserError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    """The full commit ``rev`` names, checked to hold the worker that times it."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode or not proc.stdout.strip():
        raise UserError(f"{rev!r} is not a revision of {repo}")
    sha = proc.stdout.strip()
    if not any(subprocess.run(["git", "cat-file", "-e", f"{sha}:{worker_path(Path(), name)}"], cwd=repo,
                              capture_output=True).returncode == 0 for name in WORKER_MODULES):
        raise UserError(f"{rev} ({sha[:12]}) predates bench/ab_worker.py: linbench ab cannot time it")
    return sha


def worktree(repo: Path, sha: str) -> Path:
    """``.linbench/ab/<sha>``, checked out at ``sha``: an existing clean one is reused."""
    path = repo / ".linbench" / "ab" / sha[:12]
    if path.exists():
        found = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=path, capture_output=True,
                               text=True).stdout.split()
        if found != [str(path), sha]:
            raise UserError(f"{path} exists but is not a worktree at {sha[:12]}: remove it "
                            f"(git worktree remove --force {path}; or rm -rf it and git worktree prune)")
        if git(path, "status", "--porcelain", "--untracked-files=no"):
            raise UserError(f"{path} has local changes, so it would not time {sha[:12]}: "
                            f"git worktree remove --force {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    git(repo, "worktree", "prune")
    git(repo, "worktree", "add", "--detach", str(path), sha)
    return path
