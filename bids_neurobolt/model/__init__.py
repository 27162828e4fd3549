"""NeuroBOLT model: LaBraM spatiotemporal branch, multi-scale spectral branch, weights I/O."""

from bids_neurobolt.model.labram import STANDARD_1020, channel_positions
from bids_neurobolt.model.neurobolt import NeuroBOLT, NeuroBOLTConfig
from bids_neurobolt.model.weights import (
    Compatibility,
    LoadReport,
    ModelMetadata,
    check_compatible,
    load_labram_state,
    load_labram_weights,
    load_model,
    read_labram_state,
    read_metadata,
    save_model,
)

__all__ = [
    "STANDARD_1020",
    "Compatibility",
    "LoadReport",
    "ModelMetadata",
    "NeuroBOLT",
    "NeuroBOLTConfig",
    "channel_positions",
    "check_compatible",
    "load_labram_state",
    "load_labram_weights",
    "load_model",
    "read_labram_state",
    "read_metadata",
    "save_model",
]
