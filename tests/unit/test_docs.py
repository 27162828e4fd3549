"""The generated command-line reference in docs/ matches the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("generate", DOCS / "generate_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_usage_reference_is_up_to_date() -> None:
    committed = (DOCS / "usage.md").read_text(encoding="utf-8")
    assert committed == _generator().render(), (
        "docs/usage.md is stale: run `python docs/generate_cli_reference.py`"
    )


def test_usage_reference_documents_every_exit_code() -> None:
    from bids_neurobolt.errors import ExitCode

    text = (DOCS / "usage.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"{int(code):>2}  " in text, f"exit code {int(code)} undocumented"
