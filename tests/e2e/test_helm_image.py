"""The container image's recipe, proven without a container engine.

The Dockerfile is read, not trusted: the build stage's COPY and RUN instructions are replayed here
with its paths moved into a temporary folder — the same files copied (what .dockerignore lets
through), the wheel built from them with ``pip wheel --no-deps``, a fresh virtual environment
made and the wheel installed into it with its dependencies from the package index. The
environment's ``gpu-rightsizer`` (the image's ENTRYPOINT) then answers ``run --help`` and gives a
real recommendation for an example, importing the package from the wheel, never from this source
tree; the wheel holds no development tool (the fleet simulator, the CRD generator), and the
agent's ``--fake-nvml`` says so in one line. The runtime stage is checked for what the chart
relies on: a slim Python base, the environment copied from the build stage, a numeric non-root
user equal to the chart's ``runAsUser``, and ``ENTRYPOINT ["gpu-rightsizer", "run"]``.

Needs the package index (as ``make venv`` does); about 30 s on a 2-core machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VALUES = ROOT / "helm" / "gpu-rightsizer" / "values.yaml"
EXAMPLE = "vllm-kv-mostly-empty"
# Run from the source tree only (pyproject.toml leaves them out of the wheel).
DEV_ONLY = ("gpu_rightsizer/fleetsim/", "gpu_rightsizer/crdgen/")


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), " ".join(rest.split())
        if word == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif word == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((word, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ENV instructions (KEY=value pairs)."""
    found: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            found[key] = value
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[1]


def test_the_image_is_multi_stage_slim_and_non_root(dockerfile: list[Stage]) -> None:
    build, runtime = dockerfile
    assert build.name == "build"
    for stage in dockerfile:
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", stage.base), stage.base
    assert build.base == runtime.base, "both stages need the same Python at the same path"
    (copied,) = runtime.all("COPY")
    assert copied == "--from=build /opt/gpu-rightsizer /opt/gpu-rightsizer"
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    values = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    assert int(uid) == values["podSecurityContext"]["runAsUser"] != 0
    assert int(gid) == values["podSecurityContext"]["runAsGroup"] != 0
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["gpu-rightsizer", "run"]
    assert env_of(runtime)["PATH"].startswith("/opt/gpu-rightsizer/bin:")
    assert set(runtime.all("EXPOSE")[0].split()) == {
        str(values["health"]["port"]),
        str(values["metrics"]["port"]),
    }


def test_dockerignore_sends_only_what_the_build_copies(dockerfile: list[Stage]) -> None:
    build = dockerfile[0]
    copied = {name for args in build.all("COPY") for name in args.split()[:-1] if name != "./"}
    assert copied == {"pyproject.toml", "README.md", "operator"}
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line[1:] for line in lines if line.startswith("!")} == copied


def _replay(build: Stage, work: pathlib.Path, env: dict[str, str]) -> None:
    """Run the build stage's COPY and RUN instructions with their paths under ``work``."""
    workdir = work / build.all("WORKDIR")[0].lstrip("/")
    workdir.mkdir(parents=True)
    moved = {"/wheels": str(work / "wheels"), "/opt/gpu-rightsizer": str(work / "venv")}
    for word, args in build.instructions:
        if word == "COPY":
            *sources, dest = args.split()
            target = workdir / dest if dest != "./" else workdir
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                    )
                else:
                    shutil.copy2(origin, target / origin.name)
        elif word == "RUN":
            command = args
            for old, new in moved.items():
                command = command.replace(old, new)
            # The base image's `python` is this interpreter here.
            command = re.sub(r"(^|&& )python ", rf"\g<1>{shlex.quote(sys.executable)} ", command)
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert proc.returncode == 0, f"RUN {command}\n{proc.stdout}\n{proc.stderr}"


def test_the_recipe_builds_an_environment_whose_entrypoint_works(
    dockerfile: list[Stage], tmp_path: pathlib.Path
) -> None:
    build = dockerfile[0]
    env = {
        key: value
        for key, value in os.environ.items()
        # Nothing from this checkout may leak in: only the wheel provides the package.
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "KUBECONFIG")
        and not key.startswith("GPU_RIGHTSIZER_")
    }
    env.update(env_of(build))
    _replay(build, tmp_path, env)

    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name.startswith("gpu_rightsizer-")
    # The development tools stay out of the wheel, so out of the image.
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.namelist()
    assert "gpu_rightsizer/cli/agent.py" in shipped
    assert "gpu_rightsizer/data/catalog.yaml" in shipped
    assert not [n for n in shipped if n.startswith(DEV_ONLY)], "development tools in the wheel"
    venv_bin = tmp_path / "venv" / "bin"
    run_env = {**env, "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["gpu-rightsizer", *args],
            cwd=elsewhere,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    located = subprocess.run(
        [str(venv_bin / "python"), "-c", "import gpu_rightsizer; print(gpu_rightsizer.__file__)"],
        cwd=elsewhere,
        env=run_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert pathlib.Path(located).is_relative_to(tmp_path / "venv"), located

    helped = entrypoint("run", "--help")
    assert helped.returncode == 0, helped.stderr
    for flag in ("--prometheus-url", "--catalog-overrides", "--liveness", "--metrics-port"):
        assert flag in helped.stdout

    recommended = entrypoint(
        "recommend",
        "-f",
        str(ROOT / "examples" / f"{EXAMPLE}.yaml"),
        "--usage",
        str(ROOT / "examples" / f"{EXAMPLE}.usage.json"),
        "-o",
        "json",
    )
    assert recommended.returncode == 0, recommended.stderr
    (item,) = json.loads(recommended.stdout)
    assert item["status"]["recommendation"]["gpuModel"] == "L40S"

    # The fake NVML is the simulator's: without it, a one-line usage error, not a traceback.
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text("gpus: []\n", encoding="utf-8")
    faked = entrypoint("agent", "--node-name", "n", "--no-pod-list", "--fake-nvml", str(gpus))
    assert faked.returncode == 2, faked.stderr
    assert "--fake-nvml needs the fleet simulator" in faked.stderr
    assert "Traceback" not in faked.stderr
