"""Training NeuroBOLT on arrays: windows, splits, the training loop, metrics, baseline.

Nothing here reads or writes files except :class:`~.windows.WindowCache`, which keeps
windows in a folder the caller chooses.
"""

from bids_neurobolt.train.baselines import (
    BaselineResult,
    baseline_features,
    baseline_predictions,
    fir_ridge_baseline,
    ridge_baseline,
)
from bids_neurobolt.train.distributed import init_distributed, is_main_process, shutdown
from bids_neurobolt.train.loop import (
    FitResult,
    Runtime,
    TrainConfig,
    fit,
    predict,
    train_neurobolt,
)
from bids_neurobolt.train.metrics import grouped_metrics, metrics_table, mse, pearson_r
from bids_neurobolt.train.splits import (
    Split,
    gap_for_tr,
    intra_scan_split,
    kfold_subject_splits,
    subject_split,
)
from bids_neurobolt.train.windows import (
    WindowCache,
    Windows,
    WindowStack,
    cache_key,
    concatenate,
    make_windows,
    markers_to_rate,
    regular_markers,
)

__all__ = [
    "BaselineResult",
    "FitResult",
    "Runtime",
    "Split",
    "TrainConfig",
    "WindowCache",
    "WindowStack",
    "Windows",
    "baseline_features",
    "baseline_predictions",
    "cache_key",
    "concatenate",
    "fir_ridge_baseline",
    "fit",
    "gap_for_tr",
    "grouped_metrics",
    "init_distributed",
    "intra_scan_split",
    "is_main_process",
    "kfold_subject_splits",
    "make_windows",
    "markers_to_rate",
    "metrics_table",
    "mse",
    "pearson_r",
    "predict",
    "regular_markers",
    "ridge_baseline",
    "shutdown",
    "subject_split",
    "train_neurobolt",
]
