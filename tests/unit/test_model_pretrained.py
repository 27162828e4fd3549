"""Named pre-trained weights: registry, offline download into the cache, --pretrained NAME.

No test touches the network: downloads come from ``file://`` URLs or a replaced opener.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import os
import shutil
import stat
import urllib.error
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bids_neurobolt.config import Config
from bids_neurobolt.errors import ConfigError, DataError, ExitCode, MissingInputError
from bids_neurobolt.fetch import main as fetch_main
from bids_neurobolt.fmri.atlases import CACHE_ENV
from bids_neurobolt.model import pretrained
from bids_neurobolt.model.pretrained import (
    REGISTRY,
    fetch_weights,
    resolve_pretrained,
    weights_spec,
)

NAME = "labram-base"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A small checkpoint laid out as LaBraM's save_model writes it."""
    path = tmp_path / "upstream" / "labram-base.pth"
    path.parent.mkdir()
    torch.save(
        {
            "model": {
                "student.cls_token": torch.randn(1, 1, 200),
                "student.blocks.0.attn.qkv.weight": torch.randn(600, 200),
                "lm_head.weight": torch.randn(16, 200),
            },
            "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0]}]},
            "epoch": 49,
            "scaler": {"scale": 65536.0},
            "args": argparse.Namespace(model="labram_base_patch200_1600_8k_vocab", lr=5e-4),
        },
        path,
    )
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    """Temporary files left in the weights folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _pin(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    monkeypatch.setitem(REGISTRY, NAME, dataclasses.replace(REGISTRY[NAME], **changes))


def _no_network(url: str):
    raise AssertionError(f"nothing may be downloaded here ({url})")


def test_registry_entry_is_the_official_labram_base():
    spec = weights_spec("LaBraM-Base")
    assert spec.filename == "labram-base.pth"
    assert spec.url == "https://github.com/935963004/LaBraM/raw/main/checkpoints/labram-base.pth"
    assert spec.licence == "MIT"
    # Not pinned (no published SHA-256 could be confirmed): trust on first use.
    assert spec.sha256 is None
    with pytest.raises(ConfigError, match="Did you mean 'labram-base'"):
        weights_spec("labram-bse")


def test_first_download_is_atomic_and_records_its_checksum(tmp_path, checkpoint):
    cache = tmp_path / "cache"
    path = fetch_weights(NAME, cache, url=checkpoint.as_uri())
    assert path == cache / "weights" / "labram-base.pth"
    assert path.read_bytes() == checkpoint.read_bytes()
    record = cache / "weights" / "labram-base.pth.sha256"
    assert record.read_text() == f"{_sha256(checkpoint)}  labram-base.pth\n"
    assert _leftovers(path.parent) == []
    # Cached and matching its record: nothing is downloaded again.
    assert fetch_weights(NAME, cache, opener=_no_network) == path


def test_download_is_readable_by_the_other_users_of_a_shared_cache(tmp_path, checkpoint):
    previous = os.umask(0o022)
    try:
        path = fetch_weights(NAME, tmp_path, url=checkpoint.as_uri())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_file_put_in_the_cache_by_hand_is_recorded_or_replaced(tmp_path, checkpoint):
    weights = tmp_path / "weights" / "labram-base.pth"
    weights.parent.mkdir()
    shutil.copyfile(checkpoint, weights)
    assert fetch_weights(NAME, tmp_path, opener=_no_network) == weights
    assert (
        (tmp_path / "weights" / "labram-base.pth.sha256")
        .read_text()
        .startswith(_sha256(checkpoint))
    )
    (tmp_path / "weights" / "labram-base.pth.sha256").unlink()
    weights.write_bytes(b"partial copy")  # not a checkpoint: downloaded again
    fetch_weights(NAME, tmp_path, url=checkpoint.as_uri())
    assert weights.read_bytes() == checkpoint.read_bytes()


def test_later_downloads_are_verified_against_the_record(tmp_path, checkpoint):
    cache = tmp_path / "cache"
    path = fetch_weights(NAME, cache, url=checkpoint.as_uri())
    path.write_bytes(b"damaged")  # the cached copy was modified
    other = tmp_path / "other.pth"
    torch.save({"model": {"student.cls_token": torch.zeros(1, 1, 200)}}, other)
    with pytest.raises(DataError, match="does not match its checksum") as info:
        fetch_weights(NAME, cache, url=other.as_uri())
    assert "recorded at the first download" in str(info.value)
    assert info.value.exit_code == ExitCode.DATAERR
    assert path.read_bytes() == b"damaged"  # not overwritten by a mismatching file
    assert _leftovers(path.parent) == []
    # The right file repairs the cache.
    assert fetch_weights(NAME, cache, url=checkpoint.as_uri()).read_bytes() == (
        checkpoint.read_bytes()
    )


def test_pinned_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, checkpoint):
    _pin(monkeypatch, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch_weights(NAME, cache, opener=lambda url: checkpoint.open("rb"))
    message = str(info.value)
    assert "labram-base.pth:" in message and "pinned in bids-neurobolt" in message
    assert _sha256(checkpoint) in message and "0" * 64 in message
    assert list((cache / "weights").iterdir()) == []  # no partial file, no record


def test_pinned_checksum_match_writes_no_record(tmp_path, monkeypatch, checkpoint):
    _pin(monkeypatch, sha256=_sha256(checkpoint).upper())
    served: list[str] = []

    def opener(url: str):
        served.append(url)
        return io.BytesIO(checkpoint.read_bytes())

    path = fetch_weights(NAME, tmp_path, opener=opener)
    assert served == [REGISTRY[NAME].url]
    assert sorted(p.name for p in path.parent.iterdir()) == ["labram-base.pth"]


def test_download_that_is_not_a_checkpoint_is_refused(tmp_path):
    html = b"<!DOCTYPE html><html><body>Rate limited</body></html>"
    with pytest.raises(DataError, match="not a usable LaBraM checkpoint"):
        fetch_weights(NAME, tmp_path, opener=lambda url: io.BytesIO(html))
    assert list((tmp_path / "weights").iterdir()) == []  # not cached, checksum not trusted


def test_download_failure_is_a_clear_error(tmp_path):
    def offline(url: str):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(MissingInputError, match="could not download") as info:
        fetch_weights(NAME, tmp_path, opener=offline)
    assert info.value.exit_code == ExitCode.NOINPUT
    assert REGISTRY[NAME].url in str(info.value)
    assert list((tmp_path / "weights").iterdir()) == []


def test_resolve_a_path_or_a_cached_name(tmp_path, monkeypatch, checkpoint):
    assert resolve_pretrained(checkpoint, None) == checkpoint
    assert resolve_pretrained("elsewhere/absent.pth", None) == Path("elsewhere/absent.pth")
    cache = tmp_path / "cache"
    with pytest.raises(MissingInputError) as info:
        resolve_pretrained(NAME, cache)
    message = str(info.value)
    assert str(cache / "weights" / "labram-base.pth") in message
    assert f"bids-neurobolt-fetch --weights labram-base --cache-dir {cache}" in message
    assert info.value.exit_code == ExitCode.NOINPUT
    path = fetch_weights(NAME, cache, url=checkpoint.as_uri())
    assert resolve_pretrained(NAME, cache) == path
    monkeypatch.setenv(CACHE_ENV, str(cache))
    assert resolve_pretrained("labram-base", None) == path
    with pytest.raises(ConfigError, match="Did you mean 'labram-base'"):
        resolve_pretrained("labram-bas", cache)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="do not match their checksum"):
        resolve_pretrained(NAME, cache)


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("labram-base").write_bytes(b"a file named like the registry entry")
    assert resolve_pretrained(NAME, tmp_path / "cache") == Path("labram-base")


def test_config_resolves_the_name(tmp_path, checkpoint):
    cache = tmp_path / "cache"
    data = {
        "inputs": {"bids_dir": str(tmp_path), "pretrained": NAME, "atlas_cache": str(cache)},
        "execution": {"output_dir": str(tmp_path / "out")},
    }
    with pytest.raises(MissingInputError, match="bids-neurobolt-fetch --weights labram-base"):
        Config.from_mapping(data)
    path = fetch_weights(NAME, cache, url=checkpoint.as_uri())
    config = Config.from_mapping(data)
    assert config.inputs.pretrained == path
    assert Config.from_mapping(config.to_dict()) == config  # the snapshot round-trips


def test_fetch_command_line(tmp_path, monkeypatch, checkpoint):
    _pin(monkeypatch, url=checkpoint.as_uri())
    runner = CliRunner()
    cache = tmp_path / "cache"
    result = runner.invoke(fetch_main, ["--weights", NAME, "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert (cache / "weights" / "labram-base.pth").is_file()
    assert not (cache / "atlases").exists()  # --weights alone fetches no atlas
    listing = runner.invoke(fetch_main, ["--list", "--cache-dir", str(cache)])
    assert any(line.startswith(NAME) and "cached" in line for line in listing.output.splitlines())
    _pin(monkeypatch, url=checkpoint.as_uri(), sha256="f" * 64)
    (cache / "weights" / "labram-base.pth").unlink()
    failed = runner.invoke(fetch_main, ["--weights", NAME, "--cache-dir", str(cache)])
    assert failed.exit_code == ExitCode.DATAERR, failed.output
    assert "does not match its checksum" in failed.output
    unknown = runner.invoke(fetch_main, ["--weights", "labram-huge", "--cache-dir", str(cache)])
    assert unknown.exit_code == ExitCode.USAGE
    assert "unknown pre-trained weights 'labram-huge'" in unknown.output


def test_fetch_downloads_with_urllib_by_default(tmp_path, monkeypatch, checkpoint):
    opened: list[str] = []

    def fake_urlopen(url: str, timeout: float):
        opened.append(url)
        return checkpoint.open("rb")

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", fake_urlopen)
    fetch_weights(NAME, tmp_path)
    assert opened == [REGISTRY[NAME].url]
