"""``bids-neurobolt-docker``: run the container image as if bids-neurobolt were installed.

The wrapper takes the command line of ``bids-neurobolt`` (see ``bids-neurobolt --help``)
and turns it into a ``docker run`` command, in the spirit of ``fmriprep-docker``:

* the dataset is mounted read-only at ``/data``, the output folder read-write at
  ``/out`` (created on the host first, so that it belongs to you), ``-w/--work-dir``
  at ``/work``; every other path given to an option (``--model``, ``--fmriprep-dir``,
  ``--bids-filter-file``, an atlas file...) is mounted read-only under ``/inputs/``
  (a file's folder is mounted, so that sidecars beside it stay visible), unless it lies
  inside one of the folders above;
* the container runs with your user and group ids (``-u``), without network (runs need
  none: atlases and weights are in the image), and with the sentinel variable that
  records the image in the outputs' ``dataset_description.json``;
* the GPU is passed (``--gpus all``) when ``--device cuda`` is asked, or with
  ``--device auto`` when the host has an NVIDIA GPU; ``--gpus`` overrides;
* the command is printed; ``--dry-run`` prints it without running it.

Which options take paths is read from the ``bids-neurobolt`` click command itself, so
new options are handled without changes here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import click

from bids_neurobolt import __version__
from bids_neurobolt.cli import cli as app_command
from bids_neurobolt.cli import expand_multi_value
from bids_neurobolt.errors import ConfigError, MissingInputError, NeuroboltError, OutputError

#: The published image of this version.
DEFAULT_IMAGE = f"ghcr.io/bids-neurobolt/bids-neurobolt:{__version__}"

#: Environment variable that records the container in the outputs' provenance
#: (read by :mod:`bids_neurobolt.derivatives.writer`).
CONTAINER_ENV = "BIDS_NEUROBOLT_CONTAINER"

#: Where the host folders appear inside the container.
BIDS_MOUNT = PurePosixPath("/data")
OUTPUT_MOUNT = PurePosixPath("/out")
WORK_MOUNT = PurePosixPath("/work")
INPUTS_MOUNT = PurePosixPath("/inputs")

#: Option names (click parameter names) whose path is a writable location, not an input.
WRITABLE_OPTIONS: frozenset[str] = frozenset({"work_dir"})

#: Path options that also take a name resolved inside the container (``--pretrained
#: labram-base``): a bare word (no folder, no extension) that is no file on the host is
#: passed through unmounted.
NAMED_OPTIONS: frozenset[str] = frozenset({"pretrained"})

#: Device files whose presence shows an NVIDIA driver on the host.
NVIDIA_DEVICE_FILES: tuple[Path, ...] = (Path("/dev/nvidiactl"),)

#: Exit status when Docker cannot be used (sysexits.h EX_UNAVAILABLE).
EX_UNAVAILABLE = 69


class DockerUnavailableError(NeuroboltError, RuntimeError):
    """Docker is not installed, not running, or not usable by this user."""


@dataclass(frozen=True)
class Mount:
    """One bind mount: a host path seen at a container path."""

    host: Path
    container: PurePosixPath
    read_only: bool

    def as_args(self) -> list[str]:
        """Return ``["-v", "host:container[:ro]"]``."""
        spec = f"{self.host}:{self.container}" + (":ro" if self.read_only else "")
        return ["-v", spec]


@dataclass(frozen=True)
class AppOption:
    """What the wrapper needs to know about one option of ``bids-neurobolt``."""

    name: str
    takes_value: bool
    is_path: bool


@dataclass
class DockerCommand:
    """A ``docker run`` command and the host folders to create before running it."""

    argv: list[str]
    mounts: list[Mount] = field(default_factory=list)
    create: list[Path] = field(default_factory=list)
    gpus: str | None = None

    def __str__(self) -> str:
        return shlex.join(self.argv)


def app_options(command: click.Command = app_command) -> dict[str, AppOption]:
    """Map every flag of the app's click command (aliases included) to its description."""
    table: dict[str, AppOption] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        takes_value = not (param.is_flag or param.count)
        option = AppOption(
            name=param.name,
            takes_value=takes_value,
            is_path=takes_value and isinstance(param.type, click.Path),
        )
        for flag in (*param.opts, *param.secondary_opts):
            table[flag] = option
    return table


@dataclass
class _Token:
    """One element of the app's command line: an option with its value, or a word."""

    text: str
    option: AppOption | None = None
    value: str | None = None


def _tokenize(args: Sequence[str], table: dict[str, AppOption]) -> list[_Token]:
    """Split the app's arguments into options (with values) and positional words."""
    tokens: list[_Token] = []
    items = expand_multi_value(list(args))
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        if item == "--":
            tokens.extend(_Token(text) for text in items[i - 1 :])
            break
        if not item.startswith("-") or item == "-":
            tokens.append(_Token(item))
            continue
        flag, value = item, None
        if item.startswith("--") and "=" in item:
            flag, value = item.split("=", 1)
        elif len(item) > 2 and item[1] != "-" and item[:2] in table and table[item[:2]].takes_value:
            flag, value = item[:2], item[2:]
        option = table.get(flag)
        if option is None or not option.takes_value:
            tokens.append(_Token(item))
            continue
        if value is None:
            if i >= len(items):
                tokens.append(_Token(item))
                break
            value = items[i]
            i += 1
        tokens.append(_Token(flag, option, value))
    return tokens


def _looks_like_path(value: str, cwd: Path) -> bool:
    """Tell whether a free-text option value names a host file or folder."""
    if os.sep in value or value.startswith("~"):
        return _host_path(value, cwd).exists()
    return bool(Path(value).suffix) and (cwd / value).is_file()


def _is_name(value: str, cwd: Path) -> bool:
    """Tell whether a value of a :data:`NAMED_OPTIONS` option is a name, not a host file."""
    bare = "/" not in value and os.sep not in value and not value.startswith("~")
    return bare and not Path(value).suffix and not _host_path(value, cwd).exists()


def _host_path(value: str, cwd: Path) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else cwd / path
    return Path(os.path.normpath(path))


def _check_mountable(path: Path) -> None:
    if ":" in str(path):
        raise ConfigError(
            "contains ':', which docker -v cannot mount.",
            path=path,
            fix="Rename the folder, or link it from a path without ':'.",
        )


class _MountPlan:
    """Host paths of the app's command line, translated to container paths."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.mounts: list[Mount] = []
        self.create: list[Path] = []
        self._used: dict[str, int] = {}

    def add(self, host: Path, container: PurePosixPath, *, read_only: bool) -> PurePosixPath:
        _check_mountable(host)
        self.mounts.append(Mount(host, container, read_only))
        return container

    def inside(self, host: Path) -> PurePosixPath | None:
        """Return the container path of ``host`` if an existing mount already holds it."""
        best: Mount | None = None
        for mount in self.mounts:
            if host.is_relative_to(mount.host) and (
                best is None or len(mount.host.parts) > len(best.host.parts)
            ):
                best = mount
        if best is None:
            return None
        return best.container.joinpath(*host.relative_to(best.host).parts)

    def input(self, value: str, name: str, flag: str) -> str:
        """Mount an input path read-only and return its container path."""
        host = _host_path(value, self.cwd)
        if not host.exists():
            raise MissingInputError(
                f"given to {flag} does not exist on this host.",
                path=host,
                fix="Check the path; it is mounted into the container read-only.",
            )
        inside = self.inside(host)
        if inside is not None:
            return str(inside)
        count = self._used.get(name, 0)
        self._used[name] = count + 1
        target = INPUTS_MOUNT / (name if count == 0 else f"{name}-{count}")
        if host.is_dir():
            return str(self.add(host, target, read_only=True))
        self.add(host.parent, target, read_only=True)
        return str(target / host.name)

    def writable(self, value: str, target: PurePosixPath) -> str:
        """Mount a writable folder (created on the host before the run)."""
        host = _host_path(value, self.cwd)
        if host.exists() and not host.is_dir():
            raise ConfigError(
                "is a file; a folder is expected here.", path=host, fix="Give a folder path."
            )
        self.create.append(host)
        return str(self.add(host, target, read_only=False))


def host_has_gpu() -> bool:
    """Tell whether this host has a usable NVIDIA GPU (``nvidia-smi -L`` or its device file).

    The same test as QSIPrep's: ``nvidia-smi -L`` listing a GPU, else the driver's
    control device being present.
    """
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            result = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            result = None
        if result is not None and result.returncode == 0 and "GPU" in result.stdout:
            return True
    return any(path.exists() for path in NVIDIA_DEVICE_FILES)


def choose_gpus(gpus: str, device: str, has_gpu: bool) -> str | None:
    """Return the value of ``docker run --gpus``, or None for no GPU.

    Parameters
    ----------
    gpus : str
        The wrapper's ``--gpus``: ``auto``, ``none``, or a value for docker (``all``,
        ``device=0``...).
    device : str
        The app's ``--device`` (``auto``, ``cpu`` or ``cuda``).
    has_gpu : bool
        Whether the host has an NVIDIA GPU.
    """
    if gpus == "none":
        return None
    if gpus != "auto":
        return gpus
    if device == "cuda" or (device == "auto" and has_gpu):
        return "all"
    return None


def build_command(
    app_args: Sequence[str],
    *,
    image: str = DEFAULT_IMAGE,
    gpus: str = "auto",
    user: str | None = None,
    network: str = "none",
    env: Iterable[str] = (),
    read_only: bool = False,
    tty: bool = False,
    docker: str = "docker",
    cwd: Path | None = None,
    has_gpu: bool | None = None,
) -> DockerCommand:
    """Translate a ``bids-neurobolt`` command line into a ``docker run`` command.

    Parameters
    ----------
    app_args : sequence of str
        The arguments of ``bids-neurobolt`` (``BIDS_DIR OUTPUT_DIR LEVEL [options]``),
        with host paths.
    image : str
        Image to run.
    gpus : str
        ``auto`` (GPU when ``--device cuda``, or ``--device auto`` on a GPU host),
        ``none``, or a value passed to ``docker run --gpus``.
    user : str | None
        ``uid:gid`` the container runs as; None for none (the image's user).
    network : str
        Docker network (``none`` by default: runs need no network).
    env : iterable of str
        Extra ``NAME=VALUE`` variables.
    read_only : bool
        Run with a read-only root file system and a tmpfs ``/tmp``.
    tty : bool
        Attach a terminal (``-it``).
    docker : str
        The docker executable.
    cwd : Path | None
        Folder relative paths are resolved against; default: the current folder.
    has_gpu : bool | None
        Whether the host has a GPU; None to detect it (only when needed).

    Returns
    -------
    DockerCommand
        The command, its mounts and the host folders to create first.

    Raises
    ------
    MissingInputError
        If an input path does not exist on the host.
    ConfigError
        If a path cannot be mounted or a writable path is a file.
    """
    cwd = Path.cwd() if cwd is None else cwd
    tokens = _tokenize(app_args, app_options())
    words = [i for i, t in enumerate(tokens) if t.option is None and not t.text.startswith("-")]
    plan = _MountPlan(cwd)
    translated: dict[int, str] = {}  # token index -> container path
    if len(words) >= 1:
        bids_host = _host_path(tokens[words[0]].text, cwd)
        if not bids_host.is_dir():
            raise MissingInputError(
                "the BIDS dataset folder does not exist on this host.",
                path=bids_host,
                fix="Check the path given as BIDS_DIR.",
            )
        translated[words[0]] = str(plan.add(bids_host, BIDS_MOUNT, read_only=True))
    if len(words) >= 2:
        translated[words[1]] = plan.writable(tokens[words[1]].text, OUTPUT_MOUNT)
    for i, token in enumerate(tokens):
        if token.option is not None and token.option.name in WRITABLE_OPTIONS:
            translated[i] = plan.writable(token.value or "", WORK_MOUNT)
    device = "auto"
    for i, token in enumerate(tokens):
        option, value = token.option, token.value
        if option is None or value is None or i in translated:
            continue
        if option.name == "device":
            device = value
        if option.name in NAMED_OPTIONS and _is_name(value, cwd):
            continue
        if option.is_path or _looks_like_path(value, cwd):
            translated[i] = plan.input(value, option.name, token.text)

    app_argv: list[str] = []
    for i, token in enumerate(tokens):
        if token.option is None:
            app_argv.append(translated.get(i, token.text))
        else:
            app_argv.extend([token.text, translated.get(i, token.value or "")])

    if gpus == "auto" and device == "auto" and has_gpu is None:
        has_gpu = host_has_gpu()
    gpu_value = choose_gpus(gpus, device, bool(has_gpu))

    argv = [docker, "run", "--rm"]
    if tty:
        argv.append("-it")
    if gpu_value is not None:
        argv.extend(["--gpus", gpu_value])
    if user:
        argv.extend(["-u", user])
    if network:
        argv.extend(["--network", network])
    if read_only:
        argv.extend(["--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777"])
    argv.extend(["-e", f"{CONTAINER_ENV}=docker:{image}"])
    for item in env:
        argv.extend(["-e", item])
    for mount in plan.mounts:
        argv.extend(mount.as_args())
    argv.append(image)
    argv.extend(app_argv)
    return DockerCommand(argv=argv, mounts=plan.mounts, create=plan.create, gpus=gpu_value)


def default_user() -> str | None:
    """Return ``uid:gid`` of the calling user (None where the OS has no such ids)."""
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


def check_docker(docker: str) -> str:
    """Return the Docker server version, or raise if Docker cannot be used.

    Raises
    ------
    DockerUnavailableError
        If the executable is missing, or the daemon is not reachable by this user.
    """
    path = shutil.which(docker)
    if path is None:
        raise DockerUnavailableError(
            f"'{docker}' was not found on PATH.",
            fix="Install Docker (https://docs.docker.com/engine/install/), or use "
            "Apptainer/Singularity as described in docs/hpc.md.",
        )
    try:
        result = subprocess.run(
            [path, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DockerUnavailableError(
            f"'{docker} version' could not run ({exc}).",
            fix="Check the Docker installation.",
        ) from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise DockerUnavailableError(
            f"Docker is not usable ({detail[-1] if detail else 'no server answered'}).",
            fix="Start the Docker daemon, and make sure your user may use it "
            "(e.g. member of the 'docker' group).",
        )
    return result.stdout.strip()


_EPILOG = (
    "Every other argument is passed to bids-neurobolt in the container, with host paths "
    "replaced by their mounts. Exit status: that of bids-neurobolt; 69 when Docker cannot "
    "be used; 125 to 127 when docker run itself fails."
)


class _WrapperCommand(click.Command):
    """Show the app's own help after the wrapper's options in ``--help``."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the wrapper's notes, then the help of ``bids-neurobolt``."""
        formatter.write_paragraph()
        formatter.write_text(_EPILOG)
        with click.Context(app_command, info_name="bids-neurobolt") as app_ctx:
            app_help = app_command.get_help(app_ctx)
        formatter.write_paragraph()
        formatter.write_text("The options of bids-neurobolt:")
        formatter.write_paragraph()
        with formatter.indentation():
            for line in app_help.splitlines():
                formatter.write(f"{formatter.current_indent * ' '}{line}\n" if line else "\n")


@click.command(
    cls=_WrapperCommand,
    name="bids-neurobolt-docker",
    context_settings={
        "help_option_names": ["-h", "--help"],
        "ignore_unknown_options": True,
        "max_content_width": 100,
    },
)
@click.option(
    "-i", "--image", default=DEFAULT_IMAGE, show_default=True, help="Container image to run."
)
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    metavar="auto|none|SPEC",
    help="GPU access: 'auto' passes all GPUs with --device cuda, or with --device auto "
    "on a host with an NVIDIA GPU; 'none'; or a value for docker run --gpus "
    "(e.g. 'device=0'). Needs the NVIDIA Container Toolkit.",
)
@click.option(
    "-u",
    "--user",
    default=None,
    metavar="UID:GID",
    help="Run as this user (default: yours, so outputs belong to you).",
)
@click.option(
    "--network",
    default="none",
    show_default=True,
    help="Docker network of the container; runs need none.",
)
@click.option(
    "-e",
    "--env",
    "env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Extra environment variable for the container (repeatable).",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="Read-only root file system with a tmpfs /tmp, as on clusters.",
)
@click.option("--dry-run", is_flag=True, help="Print the docker command without running it.")
@click.argument("app_args", nargs=-1, type=click.UNPROCESSED)
def main(
    image: str,
    gpus: str,
    user: str | None,
    network: str,
    env: tuple[str, ...],
    read_only: bool,
    dry_run: bool,
    app_args: tuple[str, ...],
) -> None:
    """Run bids-neurobolt in its Docker image: BIDS_DIR OUTPUT_DIR LEVEL [OPTIONS].

    The dataset is mounted read-only, the output and work folders read-write, other
    paths read-only; the container runs as you, without network, with the GPU when
    asked for or present. The docker command is printed first.
    """
    try:
        command = build_command(
            app_args,
            image=image,
            gpus=gpus,
            user=user if user is not None else default_user(),
            network=network,
            env=env,
            read_only=read_only,
            tty=sys.stdin.isatty() and sys.stdout.isatty(),
        )
        if dry_run:
            click.echo(str(command))
            return
        check_docker(command.argv[0])
        for folder in command.create:
            _make_folder(folder)
    except NeuroboltError as exc:
        click.echo(f"bids-neurobolt-docker: error: {exc.message}", err=True)
        code = EX_UNAVAILABLE if isinstance(exc, DockerUnavailableError) else int(exc.exit_code)
        sys.exit(code)
    click.echo(f"RUNNING: {command}", err=True)
    sys.exit(_run(command.argv))


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot be created ({exc.strerror}).",
            path=folder,
            fix="Choose a folder you can write to.",
        ) from None


def _run(argv: list[str]) -> int:
    """Run docker and return its exit status (130 when interrupted)."""
    try:
        return subprocess.run(argv, check=False).returncode
    except KeyboardInterrupt:
        return 130
