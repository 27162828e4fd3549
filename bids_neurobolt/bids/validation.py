"""Validate the input dataset with the official BIDS validator (``bids-validator-deno``).

The validator runs offline on its bundled schema. Only errors that concern the files
this invocation will read (dataset-level files and the selected participants) stop
the run; a missing validator is a warning, as in fMRIPrep.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bids_neurobolt.errors import BIDSValidationError, NeuroboltWarning

logger = logging.getLogger(__name__)

VALIDATOR = "bids-validator-deno"
_MAX_LISTED = 8


@dataclass(frozen=True)
class ValidationIssue:
    """One error reported by the validator."""

    code: str
    location: str
    message: str


def find_validator() -> str | None:
    """Return the path of ``bids-validator-deno``, or None when it is not installed."""
    return shutil.which(VALIDATOR)


def validate_dataset(
    bids_dir: Path, participants: Sequence[str] = (), *, timeout: float = 600.0
) -> list[ValidationIssue]:
    """Run the BIDS validator and return the errors that concern the selection.

    Parameters
    ----------
    bids_dir : Path
        The input dataset.
    participants : sequence of str
        Selected subject labels; errors under other subjects are ignored. Empty means
        every subject.
    timeout : float
        Seconds after which the validator is abandoned (with a warning).

    Returns
    -------
    list of ValidationIssue
        The relevant errors (warnings are not returned). Empty when the validator is
        missing, times out, or finds no relevant error.
    """
    exe = find_validator()
    if exe is None:
        warnings.warn(
            f"{VALIDATOR} is not installed, so the input dataset was not validated. "
            "Install it with 'pip install bids-validator-deno', or pass "
            "--skip-bids-validation to silence this warning.",
            NeuroboltWarning,
            stacklevel=2,
        )
        return []
    try:
        proc = subprocess.run(
            [exe, str(bids_dir), "--format", "json", "--ignoreWarnings"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        warnings.warn(
            f"{VALIDATOR} did not finish within {timeout:.0f} s; the input dataset "
            "was not validated.",
            NeuroboltWarning,
            stacklevel=2,
        )
        return []
    try:
        report = json.loads(proc.stdout)
        issues = report["issues"]["issues"]
    except (ValueError, KeyError, TypeError):
        warnings.warn(
            f"{VALIDATOR} exited with code {proc.returncode} without a JSON report "
            f"({proc.stderr.strip()[:300]}); the input dataset was not validated.",
            NeuroboltWarning,
            stacklevel=2,
        )
        return []
    selected = {f"/sub-{p}/" for p in participants}
    errors = []
    for issue in issues:
        if issue.get("severity") != "error":
            continue
        location = str(issue.get("location", ""))
        if (
            selected
            and location.startswith("/sub-")
            and not any(location.startswith(s) for s in selected)
        ):
            continue
        errors.append(
            ValidationIssue(
                code=str(issue.get("code", "?")),
                location=location,
                message=" ".join(str(issue.get("issueMessage", "")).split())[:200],
            )
        )
    return errors


def raise_for_errors(bids_dir: Path, errors: Sequence[ValidationIssue]) -> None:
    """Raise :class:`BIDSValidationError` listing validator errors, if any."""
    if not errors:
        return
    listed = "; ".join(f"{e.code} at {e.location or '(dataset)'}" for e in errors[:_MAX_LISTED])
    more = f"; and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
    raise BIDSValidationError(
        f"the input failed BIDS validation with {len(errors)} error(s): {listed}{more}.",
        path=bids_dir,
        fix=f"Run '{VALIDATOR} {bids_dir}' for details and fix the dataset, or pass "
        "--skip-bids-validation to proceed anyway.",
    )
