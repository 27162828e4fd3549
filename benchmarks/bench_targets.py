"""ROI-target extraction speed: bids-neurobolt vs nilearn's NiftiMapsMasker on the same input.

Input (built once, cached under --data-dir): a 575-volume BOLD run on fMRIPrep's 2 mm
MNI152NLin2009cAsym grid (97 x 115 x 97, float32 .nii.gz; nilearn's bundled MNI brain
mask, per-voxel noise plus map-driven signals and motion effects), 6 motion confounds,
and a **synthetic** 64-map probabilistic atlas on the DiFuMo 2 mm grid (MNI152NLin6Asym,
91 x 109 x 91): 64 sparse Gaussian blobs inside the brain. The real DiFuMo-64 is not
available offline here; its maps have the same grid, count and sparsity pattern class,
which is what the cost depends on.

Each variant runs in a fresh process (peak memory is that process's), reads the BOLD
from disk, and computes the masker stage (detrend, 6 confounds, z-score) of the NeuroBOLT
targets:

* ``nilearn``: ``NiftiMapsMasker(maps, mask_img, detrend, standardize, t_r)`` from file
  paths (it resamples the maps to the data on every fit);
* ``nilearn, maps pre-resampled``: the same with maps resampled once beforehand;
* ``ours, cold``: atlas read and resampled (then cached), plus global signal, low-pass and
  scaling;
* ``ours, warm``: the same with the resampled atlas already cached.

Usage: ``python benchmarks/bench_targets.py [--volumes 575] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

TR = 2.1
N_MAPS = 64


def _fmriprep_grid():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    return affine, (97, 115, 97)


def _difumo_grid():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-90.0, -126.0, -72.0)
    return affine, (91, 109, 91)


def _brain_on(affine, shape):
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    mask = load_mni152_brain_mask(resolution=2)
    out = resample_img(
        mask,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    return np.asarray(out.get_fdata()) > 0.5


def build_inputs(data_dir: Path, n_volumes: int) -> dict[str, Path]:
    """Write the synthetic BOLD, mask, confounds and atlas (once)."""
    import nibabel as nib

    paths = {
        "bold": data_dir / f"bold_{n_volumes}.nii.gz",
        "mask": data_dir / "brain_mask.nii.gz",
        "confounds": data_dir / f"confounds_{n_volumes}.npy",
        "atlas": data_dir / "tpl-MNI152NLin6Asym_atlas-Synthetic64_res-2_probseg.nii.gz",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    a_aff, a_shape = _difumo_grid()
    a_brain = _brain_on(a_aff, a_shape)
    ijk = np.argwhere(a_brain)
    maps = np.zeros((*a_shape, N_MAPS), dtype=np.float32)
    grid = np.indices(a_shape).reshape(3, -1).T
    for k in range(N_MAPS):
        centre = ijk[rng.integers(len(ijk))]
        width = rng.uniform(3.0, 6.0)
        d2 = ((grid - centre) ** 2).sum(axis=1).reshape(a_shape)
        maps[..., k] = np.where((d2 < (3 * width) ** 2) & a_brain, np.exp(-d2 / (2 * width**2)), 0)
    nib.save(nib.Nifti1Image(maps, a_aff), paths["atlas"])
    names = "\n".join(f"{k}\tcomponent {k + 1}" for k in range(N_MAPS))
    paths["atlas"].with_name(paths["atlas"].name.replace(".nii.gz", ".tsv")).write_text(
        f"index\tname\n{names}\n"
    )

    b_aff, b_shape = _fmriprep_grid()
    brain = _brain_on(b_aff, b_shape)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), b_aff), paths["mask"])
    n_brain = int(brain.sum())
    motion = rng.standard_normal((n_volumes, 6)).cumsum(axis=0) * 0.05
    np.save(paths["confounds"], motion)
    sources = rng.standard_normal((n_volumes, 16)).cumsum(axis=0)
    mixing = rng.standard_normal((n_brain, 16)).astype(np.float32) * 2.0
    coupling = rng.standard_normal((n_brain, 6)).astype(np.float32) * 5.0
    data = np.zeros((*b_shape, n_volumes), dtype=np.float32, order="F")
    flat = data.reshape(-1, n_volumes, order="F")  # a view of the F-ordered array
    index = np.flatnonzero(brain.ravel(order="F"))
    base = rng.uniform(600, 1200, n_brain).astype(np.float32)
    for start in range(0, n_brain, 20000):
        stop = min(start + 20000, n_brain)
        block = base[start:stop, None] + mixing[start:stop] @ sources.T.astype(np.float32)
        block += coupling[start:stop] @ motion.T.astype(np.float32)
        block += rng.standard_normal((stop - start, n_volumes), dtype=np.float32) * 10
        flat[index[start:stop]] = block
    image = nib.Nifti1Image(data, b_aff)
    image.header.set_zooms((2.0, 2.0, 2.0, TR))
    nib.save(image, paths["bold"])
    return paths


def _limit_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def run_nilearn(paths: dict[str, str], preresample: bool) -> dict:
    """Run nilearn's NiftiMapsMasker from files (in a worker process)."""
    _limit_threads(2)
    import nibabel as nib
    from nilearn.image import resample_to_img
    from nilearn.maskers import NiftiMapsMasker

    start = time.perf_counter()
    maps = paths["atlas"]
    kwargs = {}
    if preresample:
        maps = resample_to_img(
            maps, paths["mask"], interpolation="continuous", force_resample=True, copy_header=True
        )
        kwargs["resampling_target"] = None
    prep = time.perf_counter() - start
    start = time.perf_counter()
    masker = NiftiMapsMasker(
        maps,
        mask_img=paths["mask"],
        detrend=True,
        standardize="zscore_sample",
        standardize_confounds=True,
        t_r=TR,
        **kwargs,
    )
    out = masker.fit_transform(nib.load(paths["bold"]), confounds=np.load(paths["confounds"]))
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "prep": prep, "signals": out, "rss": _rss()}


def run_ours(paths: dict[str, str], cache: str) -> dict:
    """Run bids-neurobolt's extraction from files (in a worker process)."""
    _limit_threads(2)
    import nibabel as nib

    from bids_neurobolt.bids.fmriprep import open_bold
    from bids_neurobolt.fmri import extract_targets, load_atlas, resample_atlas_cached

    start = time.perf_counter()
    atlas = load_atlas(paths["atlas"], cache_dir=Path(cache))
    bold = open_bold(Path(paths["bold"]))
    resampled = resample_atlas_cached(atlas, bold.affine, bold.shape, [Path(cache)])
    t_atlas = time.perf_counter() - start
    motion = np.load(paths["confounds"])
    result = extract_targets(
        bold,
        resampled,
        repetition_time=TR,
        confounds=motion,
        mask_img=nib.load(paths["mask"]),
    )
    elapsed = time.perf_counter() - start
    signals = result.cleaned.drop(columns="global signal").to_numpy()
    return {"seconds": elapsed, "prep": t_atlas, "signals": signals, "rss": _rss()}


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB


def _in_fresh_process(function, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> int:
    """Build the inputs, run every variant once, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=575)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "bids-neurobolt-bench"
    )
    parser.add_argument("--skip-nilearn", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    paths = {k: str(v) for k, v in build_inputs(args.data_dir, args.volumes).items()}
    print(f"inputs ready in {time.perf_counter() - start:.1f} s: {args.data_dir}", flush=True)
    size = Path(paths["bold"]).stat().st_size / 1024**2
    print(f"BOLD: 97x115x97x{args.volumes} float32, {size:.0f} MiB gzipped; atlas: 64 maps")
    cache = args.data_dir / "atlas-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    rows = []
    if not args.skip_nilearn:
        rows.append(("nilearn NiftiMapsMasker", _in_fresh_process(run_nilearn, paths, False)))
        rows.append(("nilearn, maps pre-resampled", _in_fresh_process(run_nilearn, paths, True)))
    rows.append(("ours, cold (resample + cache)", _in_fresh_process(run_ours, paths, str(cache))))
    rows.append(("ours, warm (cached atlas)", _in_fresh_process(run_ours, paths, str(cache))))
    reference = rows[0][1]["seconds"]
    print(f"\n{'variant':32s} {'wall s':>8s} {'vs nilearn':>10s} {'peak GiB':>9s}")
    for name, row in rows:
        print(
            f"{name:32s} {row['seconds']:8.1f} {reference / row['seconds']:9.2f}x {row['rss']:9.2f}"
        )
    ours = rows[-1][1]["signals"]
    if not args.skip_nilearn:
        for name, row in rows[:2]:
            corr = [np.corrcoef(ours[:, k], row["signals"][:, k])[0, 1] for k in range(N_MAPS)]
            print(
                f"agreement with {name}: min r = {min(corr):.6f}, "
                f"max |diff| = {np.abs(ours - row['signals']).max():.4f} (z units)"
            )
    budget = rows[-1][1]["seconds"]
    print(f"\nbudget: warm run {budget:.1f} s (target <= 30 s on 2 cores)")
    return 0 if budget <= 30 else 1


if __name__ == "__main__":
    sys.exit(main())
