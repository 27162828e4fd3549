"""Configuration: frozen settings for one invocation.

Settings fall in four groups:

* :class:`ScienceConfig`: everything that changes the numbers in an output. It is
  hashed (:meth:`ScienceConfig.digest`); the hash is recorded in every sidecar and
  decides whether existing outputs can be reused.
* :class:`Selection`: which runs of the input dataset are processed.
* :class:`Inputs`: where the data come from.
* :class:`ExecutionConfig`: how the work is done (output and work folders, threads,
  device, failure policy, verbosity). It never changes results.

A :class:`Config` round-trips through TOML: :meth:`Config.to_toml` writes the snapshot
kept under ``logs/``, and :func:`load_config_file` reads such a file back, so that
``--config-file logs/config-<uuid>.toml`` repeats a run. Values given on the command
line override the file's.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bids_neurobolt import __version__
from bids_neurobolt.errors import ConfigError

#: Processing stages in the order they run.
STEPS: tuple[str, ...] = ("sync", "clean", "targets", "model", "report")

#: Volume-marker names recognised by default (BrainVision, EEGLAB and scanner conventions).
DEFAULT_VOLUME_MARKERS: tuple[str, ...] = (
    "R128",
    "Response/R128",
    "S128",
    "Stimulus/S128",
    "TR",
    "Scanner/Scan Start",
)

#: Slice-marker names recognised by default.
DEFAULT_SLICE_MARKERS: tuple[str, ...] = ("Scanner/s", "Slice")

AnalysisLevel = Literal["participant", "group"]
ANALYSIS_LEVELS: tuple[str, ...] = ("participant", "group")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
ON_ERROR: tuple[str, ...] = ("abort", "continue")

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class SyncConfig:
    """How EEG volume markers are found and checked against the BOLD run.

    Attributes
    ----------
    volume_markers : tuple of str
        Annotation names that mark the start of a BOLD volume. A name without ``/``
        also matches any ``<type>/<name>`` annotation (``R128`` matches
        ``Response/R128``); whitespace and case are ignored.
    slice_markers : tuple of str
        Annotation names that mark the start of a slice acquisition.
    skip_markers : int
        Number of leading volume markers to ignore, e.g. dummy scans the scanner
        triggered but did not save in the BOLD file.
    tolerance_samples : float
        Marker spacing may differ from ``RepetitionTime`` by this many EEG samples...
    tolerance_fraction : float
        ...or by this fraction of ``RepetitionTime``, whichever is larger.
    """

    volume_markers: tuple[str, ...] = DEFAULT_VOLUME_MARKERS
    slice_markers: tuple[str, ...] = DEFAULT_SLICE_MARKERS
    skip_markers: int = 0
    tolerance_samples: float = 2.0
    tolerance_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not self.volume_markers:
            raise ConfigError("sync.volume_markers must name at least one marker.")
        if self.skip_markers < 0:
            raise ConfigError(f"sync.skip_markers must be >= 0. Got {self.skip_markers!r}.")
        if self.tolerance_samples < 0 or not 0 <= self.tolerance_fraction < 0.5:
            raise ConfigError(
                "sync.tolerance_samples must be >= 0 and sync.tolerance_fraction in [0, 0.5). "
                f"Got {self.tolerance_samples!r} and {self.tolerance_fraction!r}."
            )


#: Modes of the gradient and BCG removal.
REMOVAL_MODES: tuple[str, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class CleanConfig:
    """How MR artifacts are removed from the EEG (``clean`` stage).

    Attributes
    ----------
    gradient : {"auto", "on", "off"}
        Gradient artifact removal; ``auto`` removes it when the run has volume markers.
    bcg : {"auto", "on", "off"}
        Ballistocardiogram removal; ``auto`` removes it when the run has volume markers.
    aas_window : int
        Artifacts averaged into each gradient template; 0 takes at least 30 and enough
        to span 4 s (see :class:`bids_neurobolt.eeg.gradient.GradientParams`).
    obs_components : int
        Principal components of the gradient residuals fitted per artifact (OBS); -1
        chooses them automatically (those locked to the scanner), 0 disables OBS.
    bcg_components : int
        Principal components of the beat-locked BCG fitted per beat (OBS).
    highpass : float
        High-pass edge (Hz) of the cleaned EEG; 0 for none.
    lowpass : float
        Low-pass edge (Hz) of the cleaned EEG (applied before resampling to 200 Hz).
    """

    gradient: str = "auto"
    bcg: str = "auto"
    aas_window: int = 0
    obs_components: int = -1
    bcg_components: int = 4
    highpass: float = 0.0
    lowpass: float = 75.0

    def __post_init__(self) -> None:
        _check_choice("clean.gradient", self.gradient, REMOVAL_MODES)
        _check_choice("clean.bcg", self.bcg, REMOVAL_MODES)
        if self.aas_window < 0 or self.aas_window == 1:
            raise ConfigError(
                f"clean.aas_window must be 0 (automatic) or >= 2. Got {self.aas_window!r}."
            )
        if self.obs_components < -1 or not 1 <= self.bcg_components <= 20:
            raise ConfigError(
                "clean.obs_components must be >= -1 and clean.bcg_components in [1, 20]. "
                f"Got {self.obs_components!r} and {self.bcg_components!r}."
            )
        if not 0 <= self.highpass < self.lowpass <= 100:
            raise ConfigError(
                "clean.highpass and clean.lowpass must satisfy 0 <= highpass < lowpass <= 100 "
                f"(Hz; the output rate is 200 Hz). Got {self.highpass!r} and {self.lowpass!r}."
            )


@dataclass(frozen=True)
class ScienceConfig:
    """Settings that determine the results; hashed and recorded in every sidecar.

    Attributes
    ----------
    sync : SyncConfig
        Volume-marker detection and checks.
    clean : CleanConfig
        MR-artifact removal from the EEG.
    atlas : str | None
        Atlas registry name or path (used by the ``targets`` stage).
    rois : tuple of str
        ROI names or presets (used by the ``targets`` stage); empty means all.
    confounds : str
        Confound strategy for fMRIPrep inputs (``motion6``...; see
        :data:`bids_neurobolt.fmri.confounds.CONFOUND_STRATEGIES`).
    scaling : {"absmax", "zscore", "none"}
        Final target scaling (``absmax``: demean, divide by the 95th percentile of |x|).
    lowpass : float
        Cut-off (Hz) of the zero-phase Butterworth low-pass of the targets.
    random_seed : int
        Seed for every random number generator.
    sloppy : bool
        Tiny model and few epochs, for tests only.
    prediction_tr : float
        Step (s) of the prediction grid of recordings without volume markers (``--model``
        on EEG-only runs); 0 takes the repetition time the model was trained at.
    folds : int
        Folds of the group level's inter-subject cross-validation; 0 chooses
        ``min(5, n_subjects)`` (two subjects: each tests the model trained on the other).
    split : {"blocked-cv", "paper"}
        Evaluation within a run (``model`` stage): blocked 5-fold cross-validation (every
        window predicted once out of sample) or the paper's chronological 80/10/10 split.
    per_roi : bool
        Train one NeuroBOLT per ROI, as the paper did, instead of one multi-output model
        (``model`` stage and group level).
    """

    sync: SyncConfig = field(default_factory=SyncConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    atlas: str | None = None
    rois: tuple[str, ...] = ()
    confounds: str = "motion6"
    scaling: str = "absmax"
    lowpass: float = 0.15
    random_seed: int = 0
    sloppy: bool = False
    prediction_tr: float = 0.0
    folds: int = 0
    split: str = "blocked-cv"
    per_roi: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.prediction_tr <= 60:
            raise ConfigError(
                f"prediction_tr must be in [0, 60] seconds (0: the model's TR). "
                f"Got {self.prediction_tr!r}."
            )
        if self.folds < 0 or self.folds in (1, 2):
            raise ConfigError(
                f"folds must be 0 (automatic) or >= 3. Got {self.folds!r}.",
                fix="Use --folds 0, or a number of folds from 3 to the number of subjects.",
            )
        if self.random_seed < 0 or self.random_seed >= 2**32:
            raise ConfigError(f"random_seed must be in [0, 2**32). Got {self.random_seed!r}.")
        _check_choice("confounds", self.confounds, CONFOUND_STRATEGIES)
        _check_choice("scaling", self.scaling, SCALINGS)
        _check_choice("split", self.split, SPLITS)
        if not 0 < self.lowpass < 10:
            raise ConfigError(f"lowpass must be a cut-off in Hz in (0, 10). Got {self.lowpass!r}.")

    def digest(self, stage: str | None = None) -> str:
        """Return a short, stable hash of these settings, or of those a stage depends on.

        Parameters
        ----------
        stage : str | None
            ``"sync"``, ``"targets"``... (see :data:`STAGE_SETTINGS`); None hashes all.

        Returns
        -------
        str
            The first 16 hex digits of the SHA-256 of the canonical JSON form.
        """
        plain = _plain(self)
        if stage is not None:
            plain = {key: plain[key] for key in STAGE_SETTINGS[stage]}
        payload = json.dumps(plain, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: Confound strategies for fMRIPrep inputs (kept equal to bids_neurobolt.fmri.confounds's).
CONFOUND_STRATEGIES: tuple[str, ...] = (
    "none",
    "motion6",
    "motion12",
    "motion24",
    "motion6+wmcsf",
    "motion24+wmcsf",
)
#: Evaluation schemes within a run (kept equal to bids_neurobolt.train.evaluation.SPLIT_KINDS).
SPLITS: tuple[str, ...] = ("blocked-cv", "paper")
#: Target scalings (kept equal to bids_neurobolt.fmri.targets.SCALINGS).
SCALINGS: tuple[str, ...] = ("absmax", "zscore", "none")

#: The science settings each stage's results depend on (a rerun redoes a stage only
#: when one of them changed). Later stages include what their inputs depend on.
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "sync": ("sync",),
    "clean": ("sync", "clean"),
    "targets": ("atlas", "rois", "confounds", "scaling", "lowpass"),
    "model": (
        "sync",
        "clean",
        "atlas",
        "rois",
        "confounds",
        "scaling",
        "lowpass",
        "random_seed",
        "sloppy",
        "prediction_tr",
        "split",
        "per_roi",
    ),
}
#: The group level depends on everything the participant-level model does, and the folds.
STAGE_SETTINGS["group"] = (*STAGE_SETTINGS["model"], "folds")


@dataclass(frozen=True)
class Selection:
    """Which runs of the input dataset to process.

    Attributes
    ----------
    participant_label : tuple of str
        Subject labels without ``sub-``; empty means every subject.
    session_label : tuple of str
        Session labels without ``ses-``; empty means every session.
    task : tuple of str
        Task labels without ``task-``; empty means every task.
    bids_filters : dict
        PyBIDS filters per data type, e.g. ``{"eeg": {"acquisition": "hd"}}``,
        as read from ``--bids-filter-file``.
    """

    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    bids_filters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, prefix in (
            ("participant_label", "sub-"),
            ("session_label", "ses-"),
            ("task", "task-"),
        ):
            labels = tuple(normalise_label(v, prefix, option=name) for v in getattr(self, name))
            object.__setattr__(self, name, tuple(dict.fromkeys(labels)))
        unknown = set(self.bids_filters) - {"eeg", "bold"}
        if unknown:
            raise ConfigError(
                f"bids_filters may only have the keys 'eeg' and 'bold'. Got {sorted(unknown)}.",
                fix='Write the filter file as {"eeg": {...}, "bold": {...}}.',
            )


@dataclass(frozen=True)
class Inputs:
    """Where the input data come from.

    Attributes
    ----------
    bids_dir : Path
        The raw BIDS dataset (read only).
    fmriprep_dir, targets_dir : Path | None
        Preprocessed BOLD (fMRIPrep) or precomputed ROI tables (``targets`` stage).
    model : Path | None
        A trained NeuroBOLT checkpoint to apply (``model`` stage).
    atlas_cache : Path | None
        Folder of fetched atlases (default: ``$BIDS_NEUROBOLT_CACHE``, else
        ``$XDG_CACHE_HOME/bids-neurobolt``).
    pretrained : Path | None
        LaBraM weights to start training from (``model`` stage and group level): a
        checkpoint path, or a registry name (``labram-base``) that is replaced by the
        path of its file in ``<atlas_cache>/weights/`` when the configuration is built
        (:func:`bids_neurobolt.model.pretrained.resolve_pretrained`; a name that is not
        cached is a :class:`~bids_neurobolt.errors.MissingInputError` naming the fetch
        command).
    group_split : Path | None
        JSON file ``{"train": [...], "val": [...], "test": [...]}`` of subject labels:
        the group level's inter-subject split, in place of k-fold cross-validation.
    fs_license_file : Path | None
        FreeSurfer licence file, for fMRIPrep run with ``--run-fmriprep`` (default:
        ``$FS_LICENSE``, else ``$FREESURFER_HOME/license.txt``).
    """

    bids_dir: Path
    fmriprep_dir: Path | None = None
    targets_dir: Path | None = None
    model: Path | None = None
    pretrained: Path | None = None
    atlas_cache: Path | None = None
    group_split: Path | None = None
    fs_license_file: Path | None = None

    def __post_init__(self) -> None:
        if self.pretrained is not None:
            from bids_neurobolt.model.pretrained import resolve_pretrained

            resolved = resolve_pretrained(self.pretrained, self.atlas_cache)
            object.__setattr__(self, "pretrained", resolved)


@dataclass(frozen=True)
class ExecutionConfig:
    """How the work is done; never changes the numbers in an output.

    Attributes
    ----------
    output_dir : Path
        Where the derivative dataset is written.
    analysis_level : {"participant", "group"}
        Which level of the BIDS App to run.
    work_dir : Path | None
        Scratch space (PyBIDS database, caches); defaults to ``<output_dir>/../work``
        resolved by the workflow when None.
    steps : tuple of str
        Stages to run; empty means every stage that applies.
    nprocs : int
        Maximum number of CPU threads and processes; 0 is every CPU the process may use.
    omp_nthreads : int
        Maximum threads per process of the numerical libraries (PyTorch, BLAS); 0 is
        ``nprocs``.
    device : {"auto", "cpu", "cuda"}
        Where the model runs.
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the model: ``auto`` is bf16 autocast on CUDA and float32 on the CPU
        (bit-reproducible); ``bf16`` predicts 1.6x (AVX-512 BF16) to 2.3x (AMX) faster on the CPU.
    on_error : {"abort", "continue"}
        Stop at the first failed run, or process the others and report failures.
    skip_bids_validation : bool
        Do not run ``bids-validator-deno`` on the input.
    run_fmriprep : bool
        When a run's raw BOLD is not in MNI space and fMRIPrep derivatives lack it, run
        fMRIPrep (``fmriprep-docker``) for its participant into ``inputs.fmriprep_dir``
        (default ``<output_dir>/sourcedata/fmriprep``) and use its outputs. The
        numbers then come from fMRIPrep's derivatives, recorded as the targets' sources.
    verbosity : int
        0 is the default (stage lines); positive is more detail; negative is quieter.
    command_line : tuple of str
        The argv of this invocation, recorded for provenance.
    """

    output_dir: Path
    analysis_level: AnalysisLevel = "participant"
    work_dir: Path | None = None
    steps: tuple[str, ...] = ()
    nprocs: int = 0
    omp_nthreads: int = 0
    device: str = "auto"
    precision: str = "auto"
    on_error: str = "abort"
    skip_bids_validation: bool = False
    run_fmriprep: bool = False
    verbosity: int = 0
    command_line: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("analysis_level", self.analysis_level, ANALYSIS_LEVELS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("on_error", self.on_error, ON_ERROR)
        for step in self.steps:
            _check_choice("steps", step, STEPS)
        if self.nprocs < 0 or self.omp_nthreads < 0:
            raise ConfigError(
                f"nprocs and omp_nthreads must be >= 0 (0: automatic). Got {self.nprocs!r} "
                f"and {self.omp_nthreads!r}."
            )

    @property
    def threads(self) -> int:
        """Threads per process for numerical libraries (``omp_nthreads``, else ``nprocs``)."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        limit = self.nprocs or cpus or 1
        return min(self.omp_nthreads or limit, limit)


@dataclass(frozen=True)
class Config:
    """Everything one invocation needs."""

    inputs: Inputs
    execution: ExecutionConfig
    selection: Selection = field(default_factory=Selection)
    science: ScienceConfig = field(default_factory=ScienceConfig)

    def __post_init__(self) -> None:
        if self.execution.run_fmriprep and self.inputs.targets_dir is not None:
            raise ConfigError(
                "--run-fmriprep and --targets-dir contradict each other: ROI tables from "
                f"{self.inputs.targets_dir} replace the BOLD that fMRIPrep would preprocess.",
                fix="Drop --run-fmriprep to use the tables, or --targets-dir to extract the "
                "targets from fMRIPrep's BOLD.",
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as nested plain data (paths as strings)."""
        data = _plain(self)
        data["bids_neurobolt"] = {
            "version": __version__,
            "science_hash": self.science.digest(),
        }
        return data

    def to_toml(self) -> str:
        """Return the configuration as a TOML document readable by :func:`load_config_file`."""
        return dump_toml(self.to_dict())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Config:
        """Build a configuration from nested plain data, checking every key.

        Parameters
        ----------
        data : mapping
            Nested mapping shaped like :meth:`to_dict` (any subset of keys, except
            that ``inputs.bids_dir`` and ``execution.output_dir`` are required).

        Returns
        -------
        Config
            The validated configuration.

        Raises
        ------
        ConfigError
            On an unknown key, a missing required key, or a value of the wrong type.
        """
        data = dict(data)
        data.pop("bids_neurobolt", None)
        _check_keys(data, {"inputs", "execution", "selection", "science"}, "")
        science = dict(data.get("science", {}))
        _check_keys(science, _field_names(ScienceConfig), "science.")
        sync = dict(science.pop("sync", {}))
        _check_keys(sync, _field_names(SyncConfig), "science.sync.")
        clean = dict(science.pop("clean", {}))
        _check_keys(clean, _field_names(CleanConfig), "science.clean.")
        try:
            return cls(
                inputs=_build(Inputs, data.get("inputs", {}), "inputs."),
                execution=_build(ExecutionConfig, data.get("execution", {}), "execution."),
                selection=_build(Selection, data.get("selection", {}), "selection."),
                science=ScienceConfig(
                    sync=_build(SyncConfig, sync, "science.sync."),
                    clean=_build(CleanConfig, clean, "science.clean."),
                    **_convert(ScienceConfig, science, "science."),
                ),
            )
        except TypeError as exc:  # missing required field
            raise ConfigError(f"Incomplete configuration: {exc}.") from None


def normalise_label(value: str, prefix: str, *, option: str = "label") -> str:
    """Strip a BIDS entity prefix and check that the label is alphanumeric.

    Parameters
    ----------
    value : str
        A label such as ``"01"`` or ``"sub-01"``.
    prefix : str
        The entity prefix to remove, e.g. ``"sub-"``.
    option : str
        Name of the option, for the error message.

    Returns
    -------
    str
        The bare label.

    Raises
    ------
    ConfigError
        If the label holds anything but letters and digits (for instance ``../``).
    """
    label = str(value).strip().removeprefix(prefix)
    if not _LABEL_RE.match(label):
        raise ConfigError(
            f"{option} {value!r} is not a valid BIDS label: labels hold only letters and digits.",
            fix=f"Pass the label as it appears after '{prefix}' in the file names, "
            f"e.g. '{prefix}01' or '01'.",
        )
    return label


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML configuration file.

    Parameters
    ----------
    path : str | Path
        The file, shaped like the snapshots under ``logs/``.

    Returns
    -------
    dict
        Nested plain data for :meth:`Config.from_mapping`.

    Raises
    ------
    ConfigError
        If the file cannot be read or is not valid TOML.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration file ({exc.strerror}).",
            path=path,
            fix="Check the path given to --config-file.",
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"is not valid TOML: {exc}.",
            path=path,
            fix="Fix the syntax, or start from a snapshot under logs/.",
        ) from None


def dump_toml(data: Mapping[str, Any]) -> str:
    """Serialise nested plain data (tables, strings, numbers, booleans, lists) as TOML.

    ``None`` values are left out, since TOML has no null.
    """
    lines: list[str] = []
    _dump_table(data, (), lines)
    return "\n".join(lines).strip() + "\n"


# --------------------------------------------------------------------------- helpers


def _dump_table(data: Mapping[str, Any], prefix: tuple[str, ...], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if prefix and (scalars or not tables):
        lines.append(f"\n[{'.'.join(prefix)}]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables.items():
        _dump_table(value, (*prefix, _toml_key(key)), lines)


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" Did you mean '{where}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown configuration key '{where}{key}'.{hint}",
                fix=f"Known keys here: {', '.join(sorted(allowed))}.",
            )


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}. Got {value!r}.")


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    data = dict(data)
    _check_keys(data, _field_names(cls), where)
    return cls(**_convert(cls, data, where))


def _convert(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Coerce plain values to the field types of ``cls`` (paths, tuples, numbers)."""
    hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        try:
            if value is None:
                out[key] = None
            elif "Path" in hint:
                out[key] = Path(value)
            elif hint.startswith("tuple"):
                if isinstance(value, str):
                    value = [value]
                out[key] = tuple(str(v) for v in value)
            elif hint == "bool":
                if not isinstance(value, bool):
                    raise TypeError
                out[key] = value
            elif hint == "int":
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError
                out[key] = int(value)
            elif hint == "float":
                out[key] = float(value)
            elif hint.startswith("Mapping"):
                if not isinstance(value, Mapping):
                    raise TypeError
                out[key] = dict(value)
            else:
                out[key] = value
        except (TypeError, ValueError):
            raise ConfigError(
                f"configuration key '{where}{key}' must be of type {hint}. Got {value!r}."
            ) from None
    return out
