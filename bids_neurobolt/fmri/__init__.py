"""fMRI ROI targets: atlases (registry, offline cache, resampling), confounds, extraction, scaling.

:mod:`.atlases` knows the atlases the app can use and where they are cached (the only
module here that touches paths: the atlas cache folder); :mod:`.confounds` selects
nuisance regressors from an fMRIPrep-style confounds table; :mod:`.targets` turns a 4-D
BOLD image and an atlas into the ROI target table of the NeuroBOLT paper (arrays in,
arrays and diagnostics out).
"""

from bids_neurobolt.fmri.atlases import (
    CACHE_ENV,
    DEFAULT_ATLAS,
    Atlas,
    ResampledAtlas,
    atlas_names,
    fetch_atlas,
    load_atlas,
    resample_atlas,
    resample_atlas_cached,
    resolve_cache_dir,
)
from bids_neurobolt.fmri.confounds import CONFOUND_STRATEGIES, Confounds, select_confounds
from bids_neurobolt.fmri.targets import (
    GLOBAL_SIGNAL,
    PAPER_ROIS,
    SCALINGS,
    ScalingParams,
    TargetsResult,
    extract_targets,
    scale_targets,
    select_rois,
    targets_from_table,
)

__all__ = [
    "CACHE_ENV",
    "CONFOUND_STRATEGIES",
    "DEFAULT_ATLAS",
    "GLOBAL_SIGNAL",
    "PAPER_ROIS",
    "SCALINGS",
    "Atlas",
    "Confounds",
    "ResampledAtlas",
    "ScalingParams",
    "TargetsResult",
    "atlas_names",
    "extract_targets",
    "fetch_atlas",
    "load_atlas",
    "resample_atlas",
    "resample_atlas_cached",
    "resolve_cache_dir",
    "scale_targets",
    "select_confounds",
    "select_rois",
    "targets_from_table",
]
