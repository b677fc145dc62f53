"""The conda environments in envs/ name the same packages as pyproject.toml.

Conda channels are not reachable in the test environment, so these tests read the
files; they do not build the environments.
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = ("torch-cpu", "torch-cuda")

# Conda package name -> PyPI distribution name, where the two differ.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "matplotlib-base": "matplotlib",
    "snakemake-minimal": "snakemake",
}
# Conda packages that are the environment's plumbing, not msprior dependencies.
INFRASTRUCTURE = {"python", "pip", "setuptools", "cuda-version"}
# A conda match spec "name=version" (one "=": version prefix match, no build string).
SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)=(?P<version>[0-9][0-9A-Za-z.]*)$")


def pyproject_dependencies() -> dict[str, Requirement]:
    """Return pyproject.toml's run-time dependencies, by canonical PyPI name."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return {canonicalize_name(r.name): r for r in reqs}


def conda_specs(env: str) -> dict[str, str]:
    """Return {conda name: pinned version} of envs/<env>.yaml's conda packages."""
    spec = yaml.safe_load((ROOT / "envs" / f"{env}.yaml").read_text())
    pins = {}
    for entry in spec["dependencies"]:
        assert isinstance(entry, str), f"{env}: unexpected pip section {entry!r}"
        match = SPEC.match(entry)
        assert match, f"{env}: {entry!r} is not pinned as name=version"
        pins[match["name"]] = match["version"]
    return pins


def as_pypi(pins: dict[str, str]) -> dict[str, str]:
    """Map conda names to canonical PyPI names, dropping the plumbing."""
    return {
        canonicalize_name(CONDA_TO_PYPI.get(name, name)): version
        for name, version in pins.items()
        if name not in INFRASTRUCTURE
    }


@pytest.mark.parametrize("env", ENVS)
def test_env_names_the_same_packages_as_pyproject(env: str) -> None:
    wanted = set(pyproject_dependencies())
    got = set(as_pypi(conda_specs(env)))
    assert got - wanted == set(), f"{env}.yaml has packages pyproject.toml lacks"
    assert wanted - got == set(), f"{env}.yaml lacks packages of pyproject.toml"


@pytest.mark.parametrize("env", ENVS)
def test_env_pins_satisfy_pyproject_bounds(env: str) -> None:
    reqs = pyproject_dependencies()
    for name, version in as_pypi(conda_specs(env)).items():
        assert Version(version) in reqs[name].specifier, (
            f"{env}.yaml pins {name}={version}, outside pyproject's {reqs[name]}"
        )


def test_cpu_and_cuda_envs_differ_only_in_the_torch_build() -> None:
    cpu, cuda = conda_specs("torch-cpu"), conda_specs("torch-cuda")
    assert "pytorch-cpu" in cpu and "pytorch-gpu" not in cpu
    assert "pytorch-gpu" in cuda and "cuda-version" in cuda
    assert cpu["pytorch-cpu"] == cuda["pytorch-gpu"]
    shared = set(cpu) - {"pytorch-cpu"}
    assert {k: cpu[k] for k in shared} == {k: cuda[k] for k in shared}


@pytest.mark.parametrize("env", ENVS)
def test_env_channels_and_post_deploy_script(env: str) -> None:
    spec = yaml.safe_load((ROOT / "envs" / f"{env}.yaml").read_text())
    assert spec["channels"][0] == "conda-forge"
    assert "defaults" not in spec["channels"]
    # Snakemake runs envs/<env>.post-deploy.sh after creating the environment; it
    # installs msprior itself, which the conda packages above do not contain.
    script = ROOT / "envs" / f"{env}.post-deploy.sh"
    assert "pip install --no-deps" in script.read_text()
    assert "msprior" not in as_pypi(conda_specs(env))
