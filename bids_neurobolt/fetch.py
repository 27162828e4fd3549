"""``bids-neurobolt-fetch``: put what a run needs into the cache, once, with network.

The container build calls it (``bids-neurobolt-fetch --atlas difumo64 --cache-dir
/opt/bids-neurobolt``) so that runs never download anything. Each atlas is fetched with
nilearn, stored in BIDS-Atlas form under ``<cache>/atlases/`` and resampled to
fMRIPrep's 2 mm MNI152NLin2009cAsym grid under ``<cache>/resampled/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from bids_neurobolt import __version__
from bids_neurobolt.errors import NeuroboltError
from bids_neurobolt.fmri import atlases

_EPILOG = (
    f"The cache folder defaults to ${atlases.CACHE_ENV}, else ~/.cache/bids-neurobolt; "
    "bids-neurobolt reads atlases from the same place (--atlas-cache). Exit codes: 0 ok, "
    "2 bad option, 66 download failed (no network?), 73/74 cannot write the cache."
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
    help=f"Registry atlas to fetch (repeatable)  [default: {atlases.DEFAULT_ATLAS}]",
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
@click.option("--list", "list_only", is_flag=True, help="List registry atlases and what is cached.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.version_option(__version__, "--version", prog_name="bids-neurobolt-fetch")
@click.pass_context
def main(
    ctx: click.Context,
    names: tuple[str, ...],
    cache_dir: Path | None,
    no_resample: bool,
    list_only: bool,
    quiet: bool,
) -> None:
    """Fetch atlases into the cache so that bids-neurobolt runs offline."""
    cache = atlases.resolve_cache_dir(cache_dir)
    if list_only:
        for name, spec in atlases.REGISTRY.items():
            path = spec.path(cache)
            state = "cached" if path.is_file() else "missing"
            click.echo(f"{name:24s} {state:8s} {spec.title}")
        return
    try:
        for name in names or (atlases.DEFAULT_ATLAS,):
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
