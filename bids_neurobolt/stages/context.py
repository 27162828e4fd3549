"""What every stage of one run needs, computed once and shared."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bids_neurobolt import __version__
from bids_neurobolt.bids.eeg_io import EEGHeader, read_header
from bids_neurobolt.bids.fmri_io import BoldInfo, read_bold_info, sidecar_of
from bids_neurobolt.bids.layout import RunSpec
from bids_neurobolt.bids.sync import SyncResult, synchronise
from bids_neurobolt.checksums import files_match, record_files, run_files
from bids_neurobolt.config import Config
from bids_neurobolt.derivatives import writer


@dataclass
class StageResult:
    """What a stage did for one run."""

    status: str  # "done", "skipped" (up to date) or "not applicable"
    detail: str = ""
    outputs: list[Path] = field(default_factory=list)


@dataclass
class RunContext:
    """One run being processed: its inputs, the configuration and the output folders."""

    spec: RunSpec
    layout: Any
    config: Config
    bids_dir: Path
    output_dir: Path
    work_dir: Path

    @cached_property
    def header(self) -> EEGHeader:
        """EEG header and markers (read once)."""
        return read_header(self.spec)

    @cached_property
    def bold(self) -> BoldInfo | None:
        """The paired BOLD run's metadata, or None for an EEG-only recording."""
        if self.spec.bold is None:
            return None
        return read_bold_info(self.spec.bold, self.layout.get_metadata(str(self.spec.bold)))

    @cached_property
    def sync(self) -> SyncResult | None:
        """Volume alignment (None for EEG-only recordings without markers)."""
        return synchronise(self.header, self.bold, self.config.science.sync)

    def uri(self, path: Path) -> str:
        """BIDS URI of an input file (``bids:raw:...``), or its path outside the dataset."""
        try:
            return writer.bids_uri(self.bids_dir, path)
        except ValueError:
            return str(path)

    @cached_property
    def input_files(self) -> dict[str, Path]:
        """The raw files of this run: the EEG recording's files, the BOLD and its sidecar."""
        bold = self.spec.bold
        return run_files(self.spec.eeg, () if bold is None else (bold, sidecar_of(bold)))

    @cached_property
    def input_record(self) -> dict[str, dict[str, Any]]:
        """Size, time and SHA-256 of :attr:`input_files` (hashed once per invocation)."""
        return record_files(self.input_files)

    def provenance(self, stage: str) -> dict[str, Any]:
        """Sidecar keys every stage records: settings hash, inputs, seed, version."""
        return {
            "RandomSeed": self.config.science.random_seed,
            "ScienceHash": self.config.science.digest(stage),
            "RawInputs": self.input_record,
            "SoftwareVersion": f"bids-neurobolt {__version__}",
        }

    def up_to_date(self, stage: str, *paths: Path) -> bool:
        """Tell whether a stage's outputs exist, made with these settings from these inputs.

        Every path must exist and the last one (the JSON sidecar, written last) must
        record this stage's current settings hash and the run's current raw files
        (:attr:`input_files`: same names and bytes).
        """
        if not paths or not all(p.is_file() for p in paths):
            return False
        try:
            meta = json.loads(paths[-1].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if meta.get("ScienceHash") != self.config.science.digest(stage):
            return False
        return files_match(meta.get("RawInputs"), self.input_files)
