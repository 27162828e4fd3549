"""The methods paragraph and its references, for the report and ``logs/``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_CITATION = re.compile(r"\[([a-z0-9]+(?:, [a-z0-9]+)*)\]")

#: References cited by the methods text, keyed by a short id.
REFERENCES: dict[str, str] = {
    "bids": "Gorgolewski KJ et al. (2016). The brain imaging data structure. "
    "Scientific Data 3:160044.",
    "bidsapps": "Gorgolewski KJ et al. (2017). BIDS apps. PLoS Comput Biol 13(3):e1005209.",
    "pybids": "Yarkoni T et al. (2019). PyBIDS: Python tools for BIDS datasets. JOSS 4(40):1294.",
    "mne": "Gramfort A et al. (2013). MEG and EEG data analysis with MNE-Python. "
    "Front Neurosci 7:267.",
    "mnebids": "Appelhoff S et al. (2019). MNE-BIDS: Organizing electrophysiological data into "
    "the BIDS format. JOSS 4(44):1896.",
    "nilearn": "Abraham A et al. (2014). Machine learning for neuroimaging with scikit-learn. "
    "Front Neuroinform 8:14.",
    "allen2000": "Allen PJ, Josephs O, Turner R (2000). A method for removing imaging artifact "
    "from continuous EEG recorded during functional MRI. NeuroImage 12(2):230-239.",
    "niazy2005": "Niazy RK et al. (2005). Removal of FMRI environment artifacts from EEG data "
    "using optimal basis sets. NeuroImage 28(3):720-737.",
    "labram": "Jiang W, Zhao L, Lu B (2024). Large brain model for learning generic "
    "representations with tremendous EEG data in BCI. ICLR 2024.",
    "neurobolt": "Li Y et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis with "
    "multi-dimensional feature mapping. NeurIPS 2024.",
}

_TEXT: dict[str, tuple[str, tuple[str, ...]]] = {
    "intro": (
        "Data were processed with bids-neurobolt {version}, a BIDS App [bidsapps] for "
        "simultaneous EEG-fMRI datasets organised in BIDS [bids], indexed with PyBIDS [pybids] "
        "and read with MNE-Python and MNE-BIDS [mne, mnebids].",
        ("bidsapps", "bids", "pybids", "mne", "mnebids"),
    ),
    "sync": (
        "For each EEG recording the scanner's volume markers were matched one-to-one with the "
        "volumes of the paired BOLD run; their number had to equal the number of volumes and "
        "their spacing the RepetitionTime within max(2 samples, 1% of TR).",
        (),
    ),
    "clean": (
        "The MR gradient artifact was removed by trigger-locked average artifact subtraction "
        "[allen2000] with sub-sample alignment and an optimal basis set fit of the residuals; "
        "the ballistocardiogram artifact by beat-locked optimal basis sets [niazy2005]. The "
        "cleaned EEG was filtered and resampled to 200 Hz with MNE-Python [mne].",
        ("allen2000", "niazy2005", "mne"),
    ),
    "targets": (
        "Regional BOLD time series were extracted from the fMRI with nilearn maskers [nilearn], "
        "confound-regressed, low-pass filtered (0.15 Hz) and scaled as in NeuroBOLT [neurobolt].",
        ("nilearn", "neurobolt"),
    ),
    "model": (
        "BOLD signals were predicted from 16 s of EEG by NeuroBOLT [neurobolt], whose "
        "spatiotemporal branch follows LaBraM [labram].",
        ("neurobolt", "labram"),
    ),
}


def start_sentence(weights: Iterable[Mapping[str, str] | None]) -> str:
    """Say how the models started: from LaBraM weights (file, SHA-256) or from scratch.

    Parameters
    ----------
    weights : iterable of mapping | None
        One entry per trained model: ``{"file": ..., "sha256": ...}`` for a model whose
        LaBraM branch started from LaBraM weights, None for one trained from scratch.

    Returns
    -------
    str
        A sentence for the methods paragraph (empty when no model was trained).
    """
    seen = list(weights)
    files = sorted({(w["file"], w.get("sha256", "")) for w in seen if w})
    scratch = any(w is None for w in seen)
    pretrained = (
        "the LaBraM branch was initialised with LaBraM weights [labram] ("
        + "; ".join(f"{name}, SHA-256 {sha}" for name, sha in files)
        + ") and fine-tuned with layer-wise learning-rate decay 0.65"
    )
    random = (
        "all weights were initialised at random (no LaBraM weights) and trained without "
        "layer-wise learning-rate decay"
    )
    if files and scratch:
        return f"For some models {pretrained}; for the others {random}."
    if files or scratch:
        text = pretrained if files else random
        return text[0].upper() + text[1:] + "."
    return ""


def methods_parts(
    steps: Iterable[str],
    version: str,
    *,
    weights: Iterable[Mapping[str, str] | None] = (),
) -> tuple[str, list[str]]:
    """Return the methods paragraph for the stages run and its numbered references.

    Parameters
    ----------
    steps : iterable of str
        The stages that ran (``sync``, ``clean``...).
    version : str
        The bids-neurobolt version.
    weights : iterable of mapping | None
        How each trained model started (see :func:`start_sentence`).

    Returns
    -------
    paragraph : str
        Plain text citing references as ``[1]``, ``[2, 3]``.
    references : list of str
        The references in citation order.
    """
    order: list[str] = []
    sentences = []
    for key in ("intro", *[s for s in _TEXT if s in set(steps)]):
        text, cited = _TEXT[key]
        if key == "model" and (start := start_sentence(weights)):
            text = f"{text} {start}"
        order.extend(ref for ref in cited if ref not in order)
        sentences.append(text.format(version=version))
    paragraph = _CITATION.sub(
        lambda m: "[" + ", ".join(str(order.index(k.strip()) + 1) for k in m[1].split(",")) + "]",
        " ".join(sentences),
    )
    return paragraph, [REFERENCES[ref] for ref in order]


def methods_markdown(
    steps: Iterable[str],
    version: str,
    *,
    weights: Iterable[Mapping[str, str] | None] = (),
) -> str:
    """Return :func:`methods_parts` as Markdown (paragraph, then a numbered list)."""
    paragraph, references = methods_parts(steps, version, weights=weights)
    listing = "\n".join(f"{i}. {ref}" for i, ref in enumerate(references, start=1))
    return f"{paragraph}\n\n## References\n\n{listing}\n"
