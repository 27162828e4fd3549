"""bids-neurobolt: EEG-to-fMRI synthesis as a BIDS App.

Reads raw simultaneous EEG-fMRI BIDS datasets, aligns EEG to the BOLD volumes,
and (as the stages land) cleans the EEG, extracts ROI BOLD targets and trains or
applies the NeuroBOLT model, writing BIDS derivatives.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
