"""Installing fairseq-admin the way fairseq users do: their own fairseq kept, tested versions, declared imports."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO

PACKAGES = ("fairseq_admin", "fairseq_admin_tools", "fairseq_admin_evidence")
NOT_DECLARED = {"fairseq", "fairseq_cli"}  # the user's own fairseq: checked at import (compat.require_fairseq)


def _stand_in_fairseq(root: Path, version: str) -> Path:
    """A minimal distribution named ``fairseq``, as a user's own source checkout would be."""
    (root / "fairseq").mkdir(parents=True)
    (root / "fairseq" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "fairseq"\nversion = "{version}"\n[tool.setuptools]\npackages = ["fairseq"]\n')
    return root


@pytest.mark.slow
def test_installing_keeps_the_users_own_fairseq(tmp_path):
    """A venv with a fairseq 0.12 from source (a stand-in named ``fairseq``): pip would install no other."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, str(_stand_in_fairseq(tmp_path / "their_fairseq", "0.12.2"))], check=True,
                   capture_output=True)
    report = tmp_path / "report.json"
    subprocess.run([*pip, "--dry-run", "--report", str(report), "-c", str(REPO / "constraints.txt"), "-e",
                    str(REPO)], check=True, capture_output=True, timeout=600)
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "fairseq-admin" in planned and "torch" in planned
    assert not {name for name in planned if name.startswith("fairseq") and name != "fairseq-admin"}, planned


def test_a_too_old_fairseq_is_one_clear_error(tmp_path):
    old = _stand_in_fairseq(tmp_path / "old", "0.10.2")
    result = subprocess.run([sys.executable, "-c", "import fairseq_admin"], capture_output=True, text=True,
                            env={"PYTHONPATH": f"{old}:{REPO}", "PATH": ""}, cwd=tmp_path)
    assert result.returncode != 0
    assert "fairseq-admin: error: fairseq-admin needs fairseq >= 0.12, this Python has fairseq 0.10.2" in result.stderr
    assert "fairseq-fixed==0.12.3.1" in result.stderr and "Traceback" not in result.stderr


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    return {re.split(r"[<>=\[; ]", spec, maxsplit=1)[0].lower() for spec in specs}


def _third_party_imports() -> set[str]:
    ours = set(PACKAGES)
    names = set()
    for package in PACKAGES:
        for path in (REPO / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in ours and n not in sys.stdlib_module_names}


def test_every_imported_distribution_is_declared():
    distributions = importlib.metadata.packages_distributions()
    imported = _third_party_imports() - NOT_DECLARED
    missing = {name: distributions.get(name) for name in imported
               if not {d.lower() for d in distributions.get(name, [name])} & _declared()}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert not any(spec.startswith("fairseq") and spec != "fairseq-admin" for spec in _declared())


def test_the_constraints_are_the_versions_installed_here():
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    installed = {name: importlib.metadata.version(name) for name in pins}
    assert {name: installed[name].split("+")[0] for name in pins} == pins
    assert "-c \"$CONSTRAINTS\"" in (REPO / "scripts" / "setup.sh").read_text()
    assert "ruff==" in (REPO / "pyproject.toml").read_text()


def test_the_cards_layout_and_licence():
    assert (REPO / "setup.py").is_file() and "setup()" in (REPO / "setup.py").read_text()
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert "Transformer-Clinic" in (REPO / "NOTICE").read_text() and "MIT" in (REPO / "NOTICE").read_text()
    metadata = importlib.metadata.metadata("fairseq-admin")
    assert metadata["License-Expression"] == "Apache-2.0"


def test_an_installed_package_carries_its_hydra_configs_and_writes_outside_site_packages(tmp_path):
    """A plain (non-editable) install: hydra configs inside, ``fairseq-admin-dir --hydra`` finds them, and the
    evidence writes into the working directory, not beside its files."""
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree, which must stay clean
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(source)], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in (target / "fairseq_admin_tools" / "hydra" / "method").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "fairseq_admin_tools" / "hydra" / "method").glob("*.yaml"))
    work = tmp_path / "work"
    work.mkdir()
    probe = ("from fairseq_admin_tools.plugin_dir import HYDRA_CONFIGS; from fairseq_admin_evidence import common; "
             "print(HYDRA_CONFIGS); print(common.REPO); print(common.SOURCE)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=work, check=True,
                         env={"PYTHONPATH": str(target), "PATH": ""}).stdout.split()
    assert out == [str(target / "fairseq_admin_tools" / "hydra"), str(work), "None"]
