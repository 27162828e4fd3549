"""``bids-neurobolt-fetch``: put what a run needs into the cache, once, with network.

The container build calls it (``bids-neurobolt-fetch --atlas difumo64 --cache-dir
/opt/bids-neurobolt``) so that runs never download anything. Each atlas is fetched with
nilearn, stored in BIDS-Atlas form under ``<cache>/atlases/`` and resampled to
fMRIPrep's 2 mm MNI152NLin2009cAsym grid under ``<cache>/resampled/``. Pre-trained
weights (``--weights labram-base``) are downloaded to ``<cache>/weights/``, atomically
and checked against their checksum (:func:`bids_neurobolt.model.pretrained.fetch_weights`),
for ``bids-neurobolt --pretrained labram-base``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from bids_neurobolt import __version__
from bids_neurobolt.errors import NeuroboltError
from bids_neurobolt.fmri import atlases
from bids_neurobolt.model import pretrained

_EPILOG = (
    f"The cache folder defaults to ${atlases.CACHE_ENV}, else ~/.cache/bids-neurobolt; "
    "bids-neurobolt reads atlases and named weights (--pretrained labram-base) from the "
    "same place (--atlas-cache). Without --atlas or --weights, the default atlas is "
    "fetched. Exit codes: 0 ok, 2 bad option, 65 download does not match its checksum or "
    "is not a checkpoint (the cache is left as it was), 66 download failed (no network?), "
    "73/74 cannot write the cache."
)


@click.command(
    name="bids-neurobolt-fetch",
    epilog=_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--atlas",
    "names",
    multiple=True,
    metavar="NAME",
    help=f"Registry atlas to fetch (repeatable)  [default: {atlases.DEFAULT_ATLAS}, "
    "unless --weights is given]",
)
@click.option(
    "--weights",
    "weights",
    multiple=True,
    metavar="NAME",
    help="Pre-trained weights to fetch into <cache>/weights/ (repeatable): "
    f"{', '.join(pretrained.weights_names())}.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Cache folder  [default: ${atlases.CACHE_ENV} or ~/.cache/bids-neurobolt]",
)
@click.option(
    "--no-resample",
    is_flag=True,
    help="Do not pre-resample to fMRIPrep's 2 mm MNI152NLin2009cAsym grid.",
)
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="List registry atlases and weights, and what is cached.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.version_option(__version__, "--version", prog_name="bids-neurobolt-fetch")
@click.pass_context
def main(
    ctx: click.Context,
    names: tuple[str, ...],
    weights: tuple[str, ...],
    cache_dir: Path | None,
    no_resample: bool,
    list_only: bool,
    quiet: bool,
) -> None:
    """Fetch atlases and pre-trained weights into the cache so that bids-neurobolt runs offline."""
    cache = atlases.resolve_cache_dir(cache_dir)
    if list_only:
        for name, spec in atlases.REGISTRY.items():
            path = spec.path(cache)
            state = "cached" if path.is_file() else "missing"
            click.echo(f"{name:24s} {state:8s} {spec.title}")
        for name, weights_spec in pretrained.REGISTRY.items():
            state = "cached" if weights_spec.path(cache).is_file() else "missing"
            click.echo(f"{name:24s} {state:8s} {weights_spec.title} (weights)")
        return
    try:
        for name in weights:
            start = time.monotonic()
            path = pretrained.fetch_weights(name, cache)
            if not quiet:
                click.echo(f"{name}: {path} ({time.monotonic() - start:.1f} s)", err=True)
        for name in names or (() if weights else (atlases.DEFAULT_ATLAS,)):
            start = time.monotonic()
            spec = atlases.registry_spec(name)
            path = atlases.fetch_atlas(spec.name, cache)
            if not no_resample:
                atlas = atlases.load_atlas(spec.name, cache)
                affine, shape = atlases.FMRIPREP_GRID_2MM
                atlases.resample_atlas_cached(atlas, affine, shape, [cache / "resampled"])
            if not quiet:
                click.echo(f"{spec.name}: {path} ({time.monotonic() - start:.1f} s)", err=True)
    except NeuroboltError as error:
        click.echo(f"bids-neurobolt-fetch: error: {error.message}", err=True)
        ctx.exit(int(error.exit_code))
