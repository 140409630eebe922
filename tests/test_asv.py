"""asv: the configuration against asv's own keys, `asv check`, and regression detection end to end."""
import json
import site
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parent.parent
ASV = [sys.executable, "-m", "asv"]
STEP = r"Step.time_step\('linreg', 'vectorized', 'cpu', 10\)"


def asv_schema() -> dict:
    """A JSON schema of asv.conf.json made from asv's own Config: its keys, with the types of their defaults."""
    from asv.config import Config

    types = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    props = {"version": {"const": Config.api_version}, "build_cache_size": {"type": "integer"}}
    for key, default in vars(Config()).items():
        props[key] = {"type": [types[type(default)], "null"]} if type(default) in types else {}
    props["branches"] = {"type": "array", "items": {"type": "string"}, "minItems": 1}
    props["regressions_thresholds"] = {"type": "object", "additionalProperties": {"type": "number"}}
    return {"type": "object", "properties": props, "required": ["version", "repo"], "additionalProperties": False}


def test_asv_conf_matches_asv_schema():
    conf = json.loads((REPO / "asv.conf.json").read_text())
    jsonschema.validate(conf, asv_schema())
    assert conf["benchmark_dir"].startswith("bench/")
    with pytest.raises(jsonschema.ValidationError):  # the schema is strict: a misspelt key is caught
        jsonschema.validate({**conf, "default_benchmark_timout": 60}, asv_schema())


def run(*args, cwd=REPO, timeout=600):
    return subprocess.run([*ASV, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_asv_check_passes():
    run("machine", "--yes")
    out = run("check", "-E", "existing:same")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=linbench", "-c", "user.email=linbench@localhost", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.mark.slow
def test_asv_continuous_flags_a_2x_slower_form_and_not_an_unchanged_commit(tmp_path):
    clone = tmp_path / "clone"
    git("clone", "-q", str(REPO), str(clone), cwd=tmp_path)
    conf = json.loads((clone / "asv.conf.json").read_text())
    # the per-commit environment sees this venv's torch through a .pth file instead of a 5 GB install
    host = site.getsitepackages()[0]
    conf.update(repo=str(clone), benchmark_dir=str(clone / conf["benchmark_dir"]), env_dir=str(tmp_path / "env"), results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"),
                install_command=[
                    "in-dir={env_dir} python -c \"import site, sys; open(site.getsitepackages()[0] + "
                    "'/host-packages.pth', 'w').write(sys.argv[1])\" " + host,
                    "in-dir={env_dir} python -m pip install --no-deps {wheel_file}"])
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))
    vectorized = clone / "impls" / "vectorized.py"
    source = vectorized.read_text()
    step = "    def step(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:\n"
    assert step in source
    # every call does the step twice: exactly twice the work, whatever the machine's load
    twice = "    def step(self, X, y):\n        self._step(X, y)\n        return self._step(X, y)\n\n"
    vectorized.write_text(source.replace(step, twice + step.replace("def step", "def _step"), 1))
    git("commit", "-qam", "a planted slowdown", cwd=clone)
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\nA change that changes no speed.\n")
    git("commit", "-qam", "no speed change", cwd=clone)
    run("machine", "--yes", "--config", str(config), cwd=clone)

    slower = run("continuous", "--config", str(config), "-f", "1.5", "-b", STEP, "HEAD~2", "HEAD~1", cwd=clone)
    assert slower.returncode != 0, slower.stdout + slower.stderr
    assert "PERFORMANCE DECREASED" in slower.stdout and "Step.time_step('linreg', 'vectorized', 'cpu', 10)" in slower.stdout

    same = run("continuous", "--config", str(config), "-f", "1.5", "-b", STEP, "HEAD~1", "HEAD", cwd=clone)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "PERFORMANCE DECREASED" not in same.stdout
