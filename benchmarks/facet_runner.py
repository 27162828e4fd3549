"""Run FACETpy (GPL-3.0, its own virtual environment) on one recording, for the benchmark.

This script is executed by ``bench_artifacts.py`` with the Python of a separate virtual
environment that has ``facetpy`` installed; bids-neurobolt never imports FACETpy. It reads
a FIF file whose annotations mark the slice triggers (``Slice``), runs FACETpy's standard
FASTR-style chain (high-pass 1 Hz, upsampling x10, slice and sub-sample alignment, AAS with
30 artifacts, PCA of residuals, downsampling, low-pass 70 Hz), then FACETpy's QRS detector
and AAS on the heartbeats for the BCG, and saves the result (µV, float32) as .npy (and the
result after the gradient stage as ``*_gradient.npy``) plus a JSON file with the wall time
of each stage.

Usage: python facet_runner.py INPUT.fif OUTPUT.npy TIMING.json [artifact_offset_s]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from facet import (
    AASCorrection,
    CutAcquisitionWindow,
    DownSample,
    HighPassFilter,
    Loader,
    LowPassFilter,
    PasteAcquisitionWindow,
    Pipeline,
    QRSTriggerDetector,
    SliceAligner,
    SubsampleAligner,
    TriggerDetector,
    UpSample,
)

try:
    from facet import PCACorrection
except ImportError:  # optional in FACETpy
    PCACorrection = None


def main() -> None:
    source, target, timing = sys.argv[1:4]
    offset = float(sys.argv[4]) if len(sys.argv) > 4 else -0.001
    gradient = [
        Loader(path=source, preload=True, artifact_to_trigger_offset=offset),
        TriggerDetector(regex=r"^Slice$"),
        CutAcquisitionWindow(),
        HighPassFilter(freq=1.0),
        UpSample(factor=10),
        SliceAligner(ref_trigger_index=0),
        SubsampleAligner(ref_trigger_index=0),
        AASCorrection(window_size=30, correlation_threshold=0.975),
    ]
    if PCACorrection is not None:
        gradient.append(PCACorrection(n_components=0.95, hp_freq=1.0))
    gradient += [DownSample(factor=10), PasteAcquisitionWindow(), LowPassFilter(freq=70.0)]
    bcg = [QRSTriggerDetector(), AASCorrection(window_size=30)]
    start = time.perf_counter()
    result = Pipeline(gradient, name="FACETpy gradient").run(show_progress=False)
    middle = time.perf_counter()
    after_gradient = (result.get_raw().get_data() * 1e6).astype(np.float32)
    result = Pipeline(bcg, name="FACETpy BCG").run(
        initial_context=result.get_context(), show_progress=False
    )
    stop = time.perf_counter()
    raw = result.get_raw()
    np.save(target, (raw.get_data() * 1e6).astype(np.float32))
    np.save(target.replace(".npy", "_gradient.npy"), after_gradient)
    facts = {
        "gradient_s": middle - start,
        "bcg_s": stop - middle,
        "sfreq": raw.info["sfreq"],
        "n_qrs": len(result.get_context().metadata.triggers),
    }
    Path(timing).write_text(json.dumps(facts))


if __name__ == "__main__":
    main()
