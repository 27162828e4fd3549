"""Participant reports: sections, working relative links, and a real headless browser."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from .conftest import atlas_args, run_cli


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.ids: set[str] = set()
        self.anchors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "img" and values.get("src"):
            self.sources.append(values["src"])
        if tag == "a" and (values.get("href") or "").startswith("#"):
            self.anchors.append(values["href"][1:])


@pytest.fixture(scope="module")
def report_dir(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    result = run_cli(
        small_dataset, out, "participant", "-w", out.parent / "w", *atlas_args(small_dataset)
    )
    assert result.exit_code == 0, result.output
    return out


def test_report_has_every_section_and_working_links(report_dir: Path, tmp_path: Path) -> None:
    # Move the output folder: links must be relative.
    moved = tmp_path / "moved"
    shutil.copytree(report_dir, moved)
    html = (moved / "sub-01.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(html)

    for section in ("summary", "sync", "clean", "targets", "model", "warnings", "methods"):
        assert section in parser.ids
    assert set(parser.anchors) <= parser.ids
    assert parser.sources, "no figure in the report"
    for source in parser.sources:
        assert not source.startswith("/")
        assert (moved / source).is_file(), source
    assert "Response/R128" in html and "sub-01_task-rest" in html
    assert "Simulated data: the EEG and BOLD were written by bids-neurobolt-simulate" in html
    assert "Not run for this participant" in html  # stages absent in this version say so
    assert "Allen" in html  # the clean stage ran: its method is cited
    assert "LaBraM" not in html  # no citation of a method that did not run
    assert (moved / "logs" / "methods.md").read_text().startswith("# Methods")


def test_warnings_of_a_run_reach_its_report(dataset_copy: Path, tmp_path: Path) -> None:
    sidecar = dataset_copy / "sub-01/func/sub-01_task-rest_bold.json"
    sidecar.write_text(
        sidecar.read_text().replace('"RepetitionTime": 2.0', '"RepetitionTime": 2.01')
    )
    out = tmp_path / "out"
    result = run_cli(
        dataset_copy,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync,clean,targets,report",  # these 48 s runs are too short to train on (a warning)
        *atlas_args(dataset_copy),
    )
    assert result.exit_code == 0, result.output

    html = (out / "sub-01.html").read_text(encoding="utf-8")
    assert "TR=2 s but the sidecar says RepetitionTime=2.01" in html
    assert "No warnings were raised" in (out / "sub-02.html").read_text(encoding="utf-8")


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _open_in_browser(page: object, report: Path) -> dict[str, object]:
    """Load ``report``; return its images, the broken ones, failed requests and its text."""
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))  # type: ignore[attr-defined]
    page.goto(report.as_uri(), wait_until="load")  # type: ignore[attr-defined]
    broken = page.evaluate(  # type: ignore[attr-defined]
        "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.src)"
    )
    return {
        "images": page.evaluate("document.images.length"),  # type: ignore[attr-defined]
        "broken": broken,
        "failed": failed,
        "text": page.inner_text("body"),  # type: ignore[attr-defined]
    }


@pytest.mark.skipif(_chromium() is None, reason="no chromium (apt-get install chromium)")
def test_both_reports_render_in_headless_chromium(
    report_dir: Path, small_dataset: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    out = tmp_path / "out"
    shutil.copytree(report_dir, out)
    result = run_cli(small_dataset, out, "group", "-w", tmp_path / "w", "--sloppy")
    assert result.exit_code == 0, result.output
    seen = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        for name in ("sub-01.html", "group.html"):
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            seen[name] = _open_in_browser(page, out / name)
            page.screenshot(path=str(out / "logs" / f"{name}.png"), full_page=True)
            page.close()
        browser.close()

    assert seen["group.html"]["images"] >= 5  # forest, brain map, heat map, traces, curves
    for name, page_seen in seen.items():
        assert page_seen["images"] >= 1, name
        assert page_seen["broken"] == [] and page_seen["failed"] == [], name
        assert not re.search(r"\bnan\b", str(page_seen["text"]), flags=re.IGNORECASE), name
        assert (out / "logs" / f"{name}.png").stat().st_size > 10_000
