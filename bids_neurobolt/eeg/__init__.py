"""EEG cleaning for simultaneous EEG-fMRI: arrays in, arrays and diagnostics out.

The modules follow the data:

- :mod:`.gradient`: MR gradient artifact removal at the native rate (trigger-locked,
  sub-sample aligned average artifact subtraction plus an optimal basis set fit of the
  residuals);
- :mod:`.bcg`: R-peak detection and ballistocardiogram removal (beat-locked optimal
  basis sets), with an EEG-derived cardiac reference when there is no usable ECG;
- :mod:`.preprocess`: zero-phase filtering and resampling, 10-20 channel names, the
  model-input channel selection;
- :mod:`.quality`: artifact-residual and signal metrics;
- :mod:`.pipeline`: :func:`~.pipeline.clean_recording`, the one function the workflow
  calls.

Nothing here reads or writes files.
"""

from bids_neurobolt.eeg.pipeline import CleanParams, CleanResult, clean_recording

__all__ = ["CleanParams", "CleanResult", "clean_recording"]
