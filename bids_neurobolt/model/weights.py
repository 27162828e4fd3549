"""Model weights on disk: LaBraM pre-trained checkpoints in, NeuroBOLT models in and out.

This is the I/O module of :mod:`bids_neurobolt.model`; everything else in the package
works on tensors.

**LaBraM checkpoints** (``labram-base.pth``) are PyTorch pickles. They are read with
``torch.load(weights_only=True)`` only, which refuses any Python object other than
tensors and plain containers (a file that needs more is rejected, never executed). The
one class allowed on top, for the duration of the call only, is
:class:`argparse.Namespace`: LaBraM's ``save_model`` stores its command-line arguments
(``checkpoint["args"]``, plain strings, numbers, booleans, lists and tuples) beside the
weights. The state dict is ``checkpoint["model"]`` (LaBraM), ``["module"]`` (DDP) or
``["state_dict"]``, or the checkpoint itself; a ``module.`` prefix is dropped and, when
present, only the ``student.*`` entries (the encoder) are kept, without that prefix. A
checkpoint holding the encoder keys without prefix (a fine-tuned LaBraM) is also
accepted. They load into :attr:`NeuroBOLT.labram <bids_neurobolt.model.NeuroBOLT>`; a
:class:`LoadReport` lists the loaded, missing and unexpected keys, and what the
checkpoint says of itself (LaBraM model name, epoch). Named weights (``--pretrained
labram-base``) are resolved and downloaded by :mod:`bids_neurobolt.model.pretrained`.

**NeuroBOLT models** are two files with one stem: ``<name>.safetensors`` (the weights)
and ``<name>.json`` (:class:`ModelMetadata`: channels, sampling rate, window, ROI names,
atlas, target scaling, configuration hash, versions, and the SHA-256 of the weights).

Errors: a missing file is a :class:`~bids_neurobolt.errors.MissingInputError`; a file
whose content cannot be used (a pickle with code, wrong shapes, a model made for other
channels, ROIs or sampling rate) is a :class:`~bids_neurobolt.errors.DataError`
(exit code 65), because the file exists but its content does not fit.

References
----------
.. [1] Jiang W-B, Zhao L-M, Lu B-L (2024). Large brain model for learning generic
   representations with tremendous EEG data in BCI. ICLR 2024.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bids_neurobolt import __version__
from bids_neurobolt.checksums import file_sha256
from bids_neurobolt.derivatives import writer
from bids_neurobolt.errors import DataError, MissingInputError
from bids_neurobolt.model.neurobolt import NeuroBOLT, NeuroBOLTConfig

logger = logging.getLogger(__name__)

#: Value of ``format`` in a model's JSON file.
MODEL_FORMAT = "bids-neurobolt-model"
#: Version of the model file layout; bumped when it changes incompatibly.
FORMAT_VERSION = 1

_LABRAM_PREFIX = "student."
_MAX_LISTED = 6


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


# --------------------------------------------------------------------------- LaBraM


@dataclass(frozen=True)
class LoadReport:
    """What loading pre-trained weights into the LaBraM branch did.

    Attributes
    ----------
    loaded : tuple of str
        Keys copied into the model (names relative to the LaBraM branch).
    missing : tuple of str
        Model keys the checkpoint lacks (kept at their initial values; ``fc_norm.*`` is
        always among them as LaBraM pre-training has no such layer).
    unexpected : tuple of str
        Checkpoint keys the model has no use for (e.g. ``mask_token``, ``lm_head.*``).
    n_loaded_parameters : int
        Number of scalar parameters loaded.
    checkpoint : tuple of (str, str)
        What the checkpoint says of itself, when it says it (LaBraM's ``args.model`` as
        ``("model", ...)`` and ``("epoch", ...)``); empty for a bare state dict.
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    n_loaded_parameters: int
    checkpoint: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        """One line for the log."""
        line = (
            f"loaded {len(self.loaded)} tensors ({self.n_loaded_parameters:,} parameters); "
            f"missing {len(self.missing)} ({_listed(self.missing) or 'none'}); "
            f"unexpected {len(self.unexpected)} ({_listed(self.unexpected) or 'none'})"
        )
        if self.checkpoint:
            line += "; checkpoint " + ", ".join(f"{k} {v}" for k, v in self.checkpoint)
        return line


class LabramState(dict[str, torch.Tensor]):
    """Encoder weights read from a LaBraM checkpoint, and what the checkpoint says of itself.

    A plain ``dict`` of tensors (name to tensor) with one more attribute.

    Attributes
    ----------
    info : tuple of (str, str)
        Facts found beside the weights, e.g. ``(("model",
        "labram_base_patch200_1600_8k_vocab"), ("epoch", "49"))``; copied into
        :attr:`LoadReport.checkpoint`.
    """

    info: tuple[tuple[str, str], ...] = ()


#: Classes a LaBraM checkpoint may hold besides tensors and plain containers, allowed
#: only while :func:`read_labram_state` loads it: LaBraM's ``save_model`` stores its
#: ``argparse.Namespace`` of command-line arguments, whose values are plain data.
LABRAM_SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


@contextlib.contextmanager
def _labram_safe_globals() -> Iterator[None]:
    """Allow :data:`LABRAM_SAFE_GLOBALS` in ``torch.load(weights_only=True)``, scoped.

    ``torch.serialization.safe_globals`` (PyTorch >= 2.5) restores the allow-list on
    exit; on PyTorch 2.4 the list is saved and restored by hand.
    """
    serialization = torch.serialization
    scoped = getattr(serialization, "safe_globals", None)
    if scoped is not None:
        with scoped(list(LABRAM_SAFE_GLOBALS)):
            yield
        return
    previous = list(serialization.get_safe_globals())
    serialization.add_safe_globals(list(LABRAM_SAFE_GLOBALS))
    try:
        yield
    finally:
        serialization.clear_safe_globals()
        serialization.add_safe_globals(previous)


def read_labram_state(path: str | os.PathLike[str]) -> LabramState:
    """Read the encoder weights of a LaBraM checkpoint, safely.

    Accepted layouts: LaBraM's own ``{"model": state, "optimizer": ..., "epoch": ...,
    "scaler": ..., "args": Namespace(...)}``, ``{"model": state}``, ``{"module":
    state}`` (DDP), ``{"state_dict": state}`` and a bare state dict; keys with or without
    the ``module.`` and ``student.`` prefixes. Nothing is unpickled but tensors, plain
    containers and numbers, and :class:`argparse.Namespace` (:data:`LABRAM_SAFE_GLOBALS`).

    Parameters
    ----------
    path : path-like
        A ``torch.save`` file such as LaBraM's ``checkpoints/labram-base.pth``.

    Returns
    -------
    LabramState
        Encoder weights with the ``module.`` and ``student.`` prefixes removed (every
        tensor of the checkpoint's model state when it has no ``student.`` keys); its
        ``info`` holds LaBraM's model name and epoch when the checkpoint records them.

    Raises
    ------
    MissingInputError
        When the file does not exist.
    DataError
        When the file holds Python objects other than tensors and LaBraM's arguments
        (refused, not executed), is not a PyTorch checkpoint, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            "the pre-trained LaBraM weights file does not exist.",
            path=path,
            fix="Fetch LaBraM-Base once with 'bids-neurobolt-fetch --weights labram-base' "
            "and pass --pretrained labram-base, or download labram-base.pth from "
            "https://github.com/935963004/LaBraM (checkpoints/) and pass its path.",
        )
    try:
        with _labram_safe_globals():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None:
            raise DataError(
                "cannot read the file as a PyTorch checkpoint (not a weights-only pickle).",
                path=path,
                fix="Check that the download is complete (LaBraM's labram-base.pth).",
            ) from exc
        raise DataError(
            "the checkpoint contains Python objects other than tensors, which could run "
            f"code when loaded ({found.group(1)}); it was refused: only weights-only "
            "loading is allowed (tensors, plain containers and LaBraM's argparse.Namespace).",
            path=path,
            fix="Use the original LaBraM checkpoint, or re-save the state dict alone with "
            "torch.save({'model': model.state_dict()}, path).",
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"cannot read the file as a PyTorch checkpoint ({exc}).",
            path=path,
            fix="Check that the download is complete (LaBraM's labram-base.pth).",
        ) from exc
    state = {
        key.removeprefix("module."): value for key, value in _state_dict_of(checkpoint).items()
    }
    if any(key.startswith(_LABRAM_PREFIX) for key in state):
        state = {
            key.removeprefix(_LABRAM_PREFIX): value
            for key, value in state.items()
            if key.startswith(_LABRAM_PREFIX)
        }
    if not state:
        raise DataError(
            "the checkpoint holds no tensors.",
            path=path,
            fix="Pass LaBraM's labram-base.pth (a dict whose 'model' entry is a state dict).",
        )
    result = LabramState(state)
    result.info = _checkpoint_info(checkpoint)
    return result


def _state_dict_of(checkpoint: Any) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "module"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping):
        return {}
    return {str(k): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def _checkpoint_info(checkpoint: Any) -> tuple[tuple[str, str], ...]:
    """LaBraM's model name and epoch, when the checkpoint records them."""
    if not isinstance(checkpoint, Mapping):
        return ()
    info: list[tuple[str, str]] = []
    model = getattr(checkpoint.get("args"), "model", None)
    if isinstance(model, str) and model:
        info.append(("model", model[:80]))
    epoch = checkpoint.get("epoch")
    if isinstance(epoch, int | str) and not isinstance(epoch, bool):
        info.append(("epoch", str(epoch)[:20]))
    return tuple(info)


def load_labram_state(model: NeuroBOLT, state: Mapping[str, torch.Tensor]) -> LoadReport:
    """Copy LaBraM encoder weights into the model's LaBraM branch.

    Parameters
    ----------
    model : NeuroBOLT
        The model; only its LaBraM branches change (every ROI's, in a per-ROI model).
    state : mapping of str to torch.Tensor
        Encoder weights named as in LaBraM (e.g. from :func:`read_labram_state`).

    Returns
    -------
    LoadReport

    Raises
    ------
    DataError
        When a tensor has the right name but the wrong shape (e.g. weights of another
        LaBraM size, or a ``--sloppy`` model), or when no key matches.
    """
    encoders = model.labram_encoders()
    target = encoders[0].state_dict()
    loaded = [k for k in state if k in target and tuple(state[k].shape) == tuple(target[k].shape)]
    wrong = [k for k in state if k in target and k not in loaded]
    unexpected = tuple(k for k in state if k not in target)
    if wrong:
        details = _listed(
            f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)} in the model" for k in wrong
        )
        raise DataError(
            f"the pre-trained weights do not fit the LaBraM branch: {details}.",
            fix="Use LaBraM-Base weights (labram-base.pth) with the default architecture; "
            "--sloppy models cannot load them.",
        )
    if not loaded:
        raise DataError(
            "no LaBraM encoder weights found in the checkpoint (expected keys such as "
            f"student.blocks.0.attn.qkv.weight); it has {_listed(state) or 'no tensors'}.",
            fix="Pass LaBraM's labram-base.pth.",
        )
    with torch.no_grad():
        for encoder in encoders:
            own = encoder.state_dict()
            for key in loaded:
                own[key].copy_(state[key].to(own[key].dtype))
    report = LoadReport(
        loaded=tuple(loaded),
        missing=tuple(k for k in target if k not in state),
        unexpected=unexpected,
        n_loaded_parameters=sum(state[k].numel() for k in loaded),
        checkpoint=getattr(state, "info", ()),
    )
    into = f" (into each of {len(encoders)} per-ROI models)" if len(encoders) > 1 else ""
    logger.info("LaBraM weights%s: %s", into, report.summary())
    return report


def load_labram_weights(model: NeuroBOLT, path: str | os.PathLike[str]) -> LoadReport:
    """Read a LaBraM checkpoint (:func:`read_labram_state`) and load it into ``model``.

    Parameters
    ----------
    model : NeuroBOLT
        The model to initialise.
    path : path-like
        The checkpoint (``labram-base.pth``).

    Returns
    -------
    LoadReport
    """
    try:
        return load_labram_state(model, read_labram_state(path))
    except DataError as exc:
        if exc.path is None:
            exc.path = str(path)
            exc.args = (exc.message,)
        raise


# --------------------------------------------------------------------------- our models


@dataclass(frozen=True)
class ModelMetadata:
    """What a saved NeuroBOLT model needs to be applied correctly (its JSON file).

    Attributes
    ----------
    ch_names : tuple of str
        EEG channels, in the model's input order.
    roi_names : tuple of str
        Predicted ROIs, in output order.
    sfreq : float
        EEG sampling rate (Hz) of the windows.
    window : float
        Window length (s).
    model_config : dict
        :meth:`NeuroBOLTConfig.to_dict` of the architecture.
    atlas : str | None
        Atlas the ROIs come from.
    target_scaling : dict
        How targets were scaled before training, to map predictions back to BOLD units
        (e.g. ``{"method": "absmax95", "lowpass_hz": 0.15, "offset": {...},
        "scale": {...}}`` per ROI); written and read by the caller.
    config_hash : str | None
        Hash of the science settings that produced the model.
    version : str
        bids-neurobolt version that saved it.
    torch_version : str
        PyTorch version that saved it.
    seed : int | None
        Random seed of the training.
    training : dict
        Free-form training summary (epochs, best epoch, split, windows, pre-training).
    weights_sha256 : str
        SHA-256 of the ``.safetensors`` file (filled by :func:`save_model`).
    format : str
        Always :data:`MODEL_FORMAT`.
    format_version : int
        :data:`FORMAT_VERSION` of the writer.
    """

    ch_names: tuple[str, ...]
    roi_names: tuple[str, ...]
    sfreq: float
    window: float
    model_config: dict[str, Any]
    atlas: str | None = None
    target_scaling: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    version: str = __version__
    torch_version: str = torch.__version__
    seed: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    format: str = MODEL_FORMAT
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_model(cls, model: NeuroBOLT, roi_names: Sequence[str], **fields: Any) -> ModelMetadata:
        """Metadata of ``model`` predicting ``roi_names``; other fields as keywords.

        Raises
        ------
        ValueError
            When the number of ROI names differs from the model's outputs.
        """
        if len(roi_names) != model.n_outputs:
            raise ValueError(
                f"{len(roi_names)} ROI names for a model with {model.n_outputs} outputs"
            )
        return cls(
            ch_names=model.ch_names,
            roi_names=tuple(roi_names),
            sfreq=model.config.sfreq,
            window=model.config.window,
            model_config=model.config.to_dict(),
            **fields,
        )

    def to_json(self) -> str:
        """Return the JSON text of the metadata file."""
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, path: str | os.PathLike[str] | None = None) -> ModelMetadata:
        """Parse :meth:`to_json` output.

        Raises
        ------
        DataError
            When the text is not a bids-neurobolt model description of a known version.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"the model description is not valid JSON ({exc}).", path=path) from exc
        if not isinstance(values, dict) or values.get("format") != MODEL_FORMAT:
            raise DataError(
                "this JSON file does not describe a bids-neurobolt model.",
                path=path,
                fix="Pass the .safetensors/.json pair written under models/ by bids-neurobolt.",
            )
        if values.get("format_version", 0) > FORMAT_VERSION:
            raise DataError(
                f"the model was saved in format version {values['format_version']} by "
                f"bids-neurobolt {values.get('version')}; this version reads up to "
                f"{FORMAT_VERSION}.",
                path=path,
                fix="Upgrade bids-neurobolt.",
            )
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            kwargs = {k: v for k, v in values.items() if k in known}
            kwargs["ch_names"] = tuple(kwargs["ch_names"])
            kwargs["roi_names"] = tuple(kwargs["roi_names"])
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise DataError(f"the model description lacks a field ({exc}).", path=path) from exc


def model_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return the ``(weights, metadata)`` files of a model from either file or their stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in {".safetensors", ".json"} else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def canonical_safetensors(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> bytes:
    """Serialise tensors as safetensors bytes whose header has a fixed key order.

    The safetensors library writes its ``__metadata__`` entries in hash-map order, which
    changes between processes, so that identical models gave files (and SHA-256) that
    differ. The header is re-written here with sorted keys and padded with spaces to a
    multiple of 8 bytes, as the format requires; the tensor data are untouched, so any
    safetensors reader loads the file as before.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        Contiguous CPU tensors.
    metadata : mapping of str to str
        The ``__metadata__`` entries.

    Returns
    -------
    bytes

    References
    ----------
    .. [1] Hugging Face. safetensors format: an 8-byte little-endian header size, a JSON
       header, then the tensor bytes. https://github.com/huggingface/safetensors
    """
    from safetensors.torch import save

    raw = save(dict(tensors), metadata=dict(metadata))
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def save_model(
    model: NeuroBOLT, path: str | os.PathLike[str], metadata: ModelMetadata
) -> tuple[Path, Path]:
    """Save a model as ``<stem>.safetensors`` plus ``<stem>.json``, atomically.

    Parameters
    ----------
    model : NeuroBOLT
        The model (any device; saved as float32 on CPU).
    path : path-like
        Either file name, or the stem; the parent folder must exist.
    metadata : ModelMetadata
        Its description (see :meth:`ModelMetadata.for_model`); ``weights_sha256`` is
        filled in.

    Returns
    -------
    tuple of Path
        The weights and metadata files written.

    Raises
    ------
    DataError
        When the metadata does not describe this model (channels, outputs, config).
    IOFailure, OutputError
        When writing fails (disk full; permissions).
    """
    weights_path, json_path = model_paths(path)
    _check_metadata_matches(model, metadata)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    header = {"format": MODEL_FORMAT, "config_hash": str(metadata.config_hash)}
    data = canonical_safetensors(state, header)
    metadata = dataclasses.replace(metadata, weights_sha256=hashlib.sha256(data).hexdigest())
    # weights first, description last: a model whose .json exists is complete
    writer.write_bytes(weights_path, data)
    writer.write_text(json_path, metadata.to_json())
    return weights_path, json_path


def _check_metadata_matches(model: NeuroBOLT, metadata: ModelMetadata) -> None:
    problems = []
    if tuple(metadata.ch_names) != model.ch_names:
        problems.append("channels differ")
    if len(metadata.roi_names) != model.n_outputs:
        problems.append(f"{len(metadata.roi_names)} ROI names for {model.n_outputs} outputs")
    if metadata.model_config != model.config.to_dict():
        problems.append("architecture differs")
    if problems:
        raise DataError(f"the model description does not match the model: {'; '.join(problems)}.")


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read a saved model's JSON description (either file name or the stem).

    Raises
    ------
    MissingInputError
        When the JSON file does not exist.
    DataError
        When it is not a bids-neurobolt model description.
    """
    _, json_path = model_paths(path)
    if not json_path.is_file():
        raise MissingInputError(
            "the model description (.json next to the .safetensors) does not exist.",
            path=json_path,
            fix="Pass a model written by bids-neurobolt under OUTPUT_DIR/models/.",
        )
    return ModelMetadata.from_json(json_path.read_text(encoding="utf-8"), path=json_path)


def load_model(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[NeuroBOLT, ModelMetadata]:
    """Load a model saved by :func:`save_model`, in evaluation mode.

    Parameters
    ----------
    path : path-like
        The ``.safetensors`` or ``.json`` file, or their stem.
    device : str | torch.device
        Where to put the model.

    Returns
    -------
    model : NeuroBOLT
    metadata : ModelMetadata

    Raises
    ------
    MissingInputError
        When a file of the pair is missing.
    DataError
        When the weights are not a safetensors file, do not match their description
        (checksum, names or shapes), or the description is invalid.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, _ = model_paths(path)
    metadata = read_metadata(path)
    if not weights_path.is_file():
        raise MissingInputError(
            "the model weights (.safetensors next to the .json) do not exist.",
            path=weights_path,
        )
    if metadata.weights_sha256 and file_sha256(weights_path) != metadata.weights_sha256:
        raise DataError(
            "the weights file does not match the checksum in its JSON description "
            "(modified, truncated or paired with another model's description).",
            path=weights_path,
            fix="Use the .safetensors and .json written together by bids-neurobolt.",
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the weights as a safetensors file ({exc}).", path=weights_path
        ) from exc
    config = NeuroBOLTConfig.from_dict(metadata.model_config)
    model = NeuroBOLT(metadata.ch_names, len(metadata.roi_names), config=config, seed=0)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise DataError(
            "the weights do not match the architecture in the JSON description: "
            f"missing {_listed(missing) or 'none'}; unexpected {_listed(unexpected) or 'none'}; "
            f"wrong shape {_listed(wrong) or 'none'}.",
            path=weights_path,
        )
    model.load_state_dict(state)
    return model.to(device).eval(), metadata


# --------------------------------------------------------------------------- compatibility


@dataclass(frozen=True)
class Compatibility:
    """How to feed new data to a saved model.

    Attributes
    ----------
    channel_index : numpy.ndarray of int
        For each model channel, its row in the data (select ``eeg[channel_index]``).
    roi_index : numpy.ndarray of int | None
        For each model ROI, its column in the data's targets (None without targets).
    """

    channel_index: np.ndarray
    roi_index: np.ndarray | None


def check_compatible(
    metadata: ModelMetadata,
    *,
    ch_names: Sequence[str],
    sfreq: float,
    roi_names: Sequence[str] | None = None,
) -> Compatibility:
    """Check that data can be fed to a saved model, and how.

    Channels are matched by name, ignoring case; extra data channels are ignored, and
    the data may list channels in any order. Every ROI of the model must be among the
    data's targets when targets are given.

    Parameters
    ----------
    metadata : ModelMetadata
        The saved model's description.
    ch_names : sequence of str
        EEG channels of the data.
    sfreq : float
        Sampling rate of the data's windows (Hz).
    roi_names : sequence of str | None
        ROI target columns of the data, if any.

    Returns
    -------
    Compatibility

    Raises
    ------
    DataError
        When the model needs channels or ROIs the data lack, or another sampling rate.
    """
    if abs(float(sfreq) - float(metadata.sfreq)) > 1e-6:
        raise DataError(
            f"the model reads EEG at {metadata.sfreq} Hz; the data are at {sfreq} Hz.",
            fix=f"Resample the cleaned EEG to {metadata.sfreq} Hz.",
        )
    lookup = {name.strip().upper(): i for i, name in enumerate(ch_names)}
    missing = [name for name in metadata.ch_names if name.strip().upper() not in lookup]
    if missing:
        raise DataError(
            f"the model was trained on channels the data lack: {_listed(missing)}.",
            fix="Apply a model trained on this montage, or train one on these data "
            "(NeuroBOLT works with any channel subset at training time).",
        )
    channel_index = np.array([lookup[name.strip().upper()] for name in metadata.ch_names])
    roi_index = None
    if roi_names is not None:
        columns = {name: i for i, name in enumerate(roi_names)}
        absent = [name for name in metadata.roi_names if name not in columns]
        if absent:
            raise DataError(
                f"the model predicts ROIs the data's targets lack: {_listed(absent)} "
                f"(the data have {_listed(roi_names) or 'none'}).",
                fix="Use the atlas and ROI selection the model was trained with "
                f"(atlas {metadata.atlas!r}), or predict without targets.",
            )
        roi_index = np.array([columns[name] for name in metadata.roi_names])
    return Compatibility(channel_index=channel_index, roi_index=roi_index)
