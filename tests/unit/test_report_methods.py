"""Methods text: citations numbered in order of first use, one entry per reference."""

from __future__ import annotations

import re

from bids_neurobolt.report.methods import REFERENCES, methods_markdown, methods_parts


def test_citations_are_numbered_in_order_of_first_use() -> None:
    paragraph, references = methods_parts(["sync", "clean"], "9.9.9")

    cited = [int(n) for group in re.findall(r"\[([\d, ]+)\]", paragraph) for n in group.split(",")]
    first_use = list(dict.fromkeys(cited))
    assert first_use == list(range(1, len(references) + 1))
    assert "9.9.9" in paragraph
    assert REFERENCES["allen2000"] in references and REFERENCES["niazy2005"] in references
    assert REFERENCES["neurobolt"] not in references  # the model stage did not run
    assert not re.search(r"\[[a-z]", paragraph), "an unresolved citation key is left"


def test_markdown_lists_every_reference_once() -> None:
    text = methods_markdown(["sync", "clean", "targets", "model"], "1.0")
    listed = re.findall(r"^\d+\. (.+)$", text, flags=re.M)
    assert len(listed) == len(set(listed)) == len(REFERENCES) - 0


def test_the_methods_say_how_the_model_started():
    scratch, _ = methods_parts(["model"], "1.0", weights=[None])
    assert "initialised at random (no LaBraM weights)" in scratch
    assert "without layer-wise learning-rate decay" in scratch
    weights = {"file": "labram-base.pth", "sha256": "ab" * 32}
    tuned, references = methods_parts(["model"], "1.0", weights=[weights, weights])
    assert f"labram-base.pth, SHA-256 {'ab' * 32}" in tuned and "decay 0.65" in tuned
    assert "at random" not in tuned
    assert any("Large brain model" in ref for ref in references)
    both, _ = methods_parts(["model"], "1.0", weights=[None, weights])
    assert both.count("For some models") == 1 and "for the others all weights" in both
    none, _ = methods_parts(["model"], "1.0")
    assert "LaBraM weights" not in none
