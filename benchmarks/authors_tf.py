"""Ours against the authors' TensorFlow code, side by side on this machine (issue 20's comparison).

The authors' figures come from their own code (minhnhatvt/glamor-net, unchanged) run by a Python that has
TensorFlow (`--tf-python`; their Keras 2 code needs `tf-keras`, selected with `TF_USE_LEGACY_KERAS=1`), through
`benchmarks/authors_step.py` in a fresh process per repeat. Ours run in this process. Per batch (their 4, our 32),
repeats alternated so that a change of machine load hits every figure alike:

- `authors_eager`: their training step run eagerly, as their `train.py` loop runs it, fp32, inputs in memory;
- `authors_function`: the same step under `tf.function`, inputs in memory (their model's cost alone: the fastest
  their code trains);
- `authors_tfdata`: the step under `tf.function` fed by their own `tf.data` pipeline (PNG decoding, face crop,
  masking, resizing, augmentation) from 712×400 images (CAER-S's frame size): their training end to end, without
  the progress bar and metrics of their loop;
- `ours_fp32`, `ours_bf16`: our model-only step (`TrainStep`, channels-last; the paper's GLAMOR-Net, no auxiliary
  heads), inputs in memory;
- `ours_fit`: our training end to end through `Trainer.fit` from the same 712×400 images (the data module's packed
  cache, augmentation), every default callback (`lightning_loop.fit_ips`, `recipe=plain`: the same model as
  theirs), at the faster of our two model-only precisions of this run.

Issue 20 asks for `ours_fp32` ≥ `authors_function` and `ours_fit` ≥ 2.5 × `authors_tfdata` at both batches.
The TensorFlow Python needs `tensorflow-cpu tf-keras opencv-python-headless dlib-bin scipy` (their
`data_utils.py` imports dlib and cv2; its rotation needs scipy).

    python -m benchmarks.authors_tf --authors-repo PATH/glamor-net --tf-python PATH/tfenv/bin/python [--repeats 3]

Writes `benchmarks/results/<date>-<machine kind>-authors.json` (`--out` for another folder; `-2`, `-3`, ... added
rather than writing over an earlier file) and prints a markdown table.
docs/benchmarks.md describes the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if __package__ in (None, ""):  # `python benchmarks/authors_tf.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import model_throughput  # noqa: E402
from benchmarks.common import REPO, Settings, caer_size_root, kind_slug, log, machine, unused_path  # noqa: E402
from benchmarks.lightning_loop import fit_ips, fit_steps  # noqa: E402
from glamor_lightning.allocator import keep_freed_memory  # noqa: E402

STEP_SCRIPT = Path(__file__).resolve().parent / "authors_step.py"
AUTHORS_FILES = ("model.py", "config.py", "data_utils.py")
#: what their code imports (model.py, data_utils.py) besides numpy; tf_keras runs their Keras 2 code
TF_MODULES = ("tensorflow", "tf_keras", "cv2", "dlib", "scipy")
STEP_TIMEOUT_S = 600  #: an error inside tf.data can leave their step waiting for ever
BACKBONE = "original"  #: their model is the paper's, with the paper's encoder
IMAGES_PER_REPEAT = 320  #: each of their figures times this many images per repeat (10 steps at 32, 80 at 4)


class AuthorsSetupError(RuntimeError):
    """The authors' checkout or the TensorFlow Python cannot be used; the message says which and why."""


def check_setup(repo: Path, tf_python: Path) -> str:
    """The TensorFlow version `tf_python` has; an `AuthorsSetupError` naming the path and the problem otherwise."""
    missing = [f for f in AUTHORS_FILES if not (repo / f).is_file()]
    if missing:
        raise AuthorsSetupError(
            f"{repo}: not the authors' checkout (no {', '.join(missing)}); get github.com/minhnhatvt/glamor-net"
        )
    try:
        out = subprocess.run(
            [str(tf_python), "-c", f"import {', '.join(TF_MODULES)}; print(tensorflow.__version__)"],
            capture_output=True,
            text=True,
            env=_tf_env(),
            timeout=300,
        )
    except OSError as e:
        raise AuthorsSetupError(f"{tf_python}: cannot run it ({e.strerror})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise AuthorsSetupError(
            f"{tf_python}: cannot import {', '.join(TF_MODULES)} ({last}); install them there: "
            "pip install tensorflow-cpu tf-keras opencv-python-headless dlib-bin scipy"
        )
    return out.stdout.strip().splitlines()[-1]


def _tf_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return env


def authors_ips(repo: Path, tf_python: Path, batch: int, mode: str, threads: int, images: Path | None = None) -> float:
    """Images/s of their step (one repeat, in a fresh process); fed by their tf.data from `images` when given."""
    steps = max(1, IMAGES_PER_REPEAT // batch)
    cmd = [str(tf_python), str(STEP_SCRIPT), "--repo", str(repo), "--batch", str(batch), "--mode", mode]
    cmd += ["--steps", str(steps), "--threads", str(threads)] + (["--images", str(images)] if images else [])
    what = f"the authors' step ({mode}{', tf.data' if images else ''}, batch {batch})"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=_tf_env(), check=False, timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AuthorsSetupError(f"{what} did not finish in {STEP_TIMEOUT_S} s") from None
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise AuthorsSetupError(f"{what} failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])["samples"][0]


def ours_ips(precision: str, batch: int, s: Settings) -> float:
    """Images/s of our model-only step, channels-last: one repeat of about 3 s after a warm-up of 3 steps."""
    one = dataclasses.replace(s, batch=batch, repeats=1, min_repeats=1, warmup=3, repeat_s=3.0)
    return model_throughput.cell(BACKBONE, precision, "channels_last", one).median


#: the ratios issue 20 sets targets on: (ours, theirs); each the median over rounds of the ratio within a round
RATIOS = {
    "fp32_over_function": ("ours_fp32", "authors_function"),
    "fit_over_tfdata": ("ours_fit", "authors_tfdata"),
    "fit_over_function": ("ours_fit", "authors_function"),
}


def ratios(figs: dict[str, list[float]], ours: str, theirs: str) -> list[float]:
    """Ours over theirs, round by round (the figures of one round were timed minutes apart, not hours)."""
    return [a / b for a, b in zip(figs[ours], figs[theirs], strict=True)]


def run(repo: Path, tf_python: Path, batches: Sequence[int], repeats: int, s: Settings, root: Path) -> dict:
    """{batch: {figure: [img/s per repeat]}}: every figure of a batch once per round, rounds alternated."""
    threads = torch.get_num_threads()
    out: dict = {}
    for batch in batches:
        figs: dict[str, list[float]] = {
            k: [] for k in ("authors_eager", "authors_function", "authors_tfdata", "ours_fp32", "ours_bf16", "ours_fit")
        }
        for r in range(repeats):
            figs["authors_eager"].append(authors_ips(repo, tf_python, batch, "eager", threads))
            figs["authors_function"].append(authors_ips(repo, tf_python, batch, "function", threads))
            figs["authors_tfdata"].append(authors_ips(repo, tf_python, batch, "function", threads, images=root))
            figs["ours_fp32"].append(ours_ips("fp32", batch, s))
            figs["ours_bf16"].append(ours_ips("bf16-mixed", batch, s))
            faster = (
                "bf16-mixed" if statistics.median(figs["ours_bf16"]) > statistics.median(figs["ours_fp32"]) else "fp32"
            )
            setting = {"precision": faster, "channels_last": True, "key": f"{faster}/channels_last"}
            figs["ours_fit"].append(fit_ips(root, BACKBONE, setting, batch, fit_steps(batch), s))
            log(
                f"authors vs ours, batch {batch}, round {r + 1}: "
                + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figs.items())
            )
        out[str(batch)] = {
            "samples": figs,
            "median": {k: statistics.median(v) for k, v in figs.items()},
            "ratios": {name: statistics.median(ratios(figs, ours, theirs)) for name, (ours, theirs) in RATIOS.items()},
            "fit_precision": faster,
        }
    return out


def table(results: dict) -> str:
    """Medians of the figures; each ratio the median of its per-round ratios (`RATIOS`)."""
    rows = [
        "| batch | authors: eager | authors: `tf.function` | authors: `tf.function` + their tf.data | ours fp32 CL "
        "| ours bf16 CL | ours `Trainer.fit` (precision) | ours fp32 / authors' function "
        "| ours fit / authors' function + tf.data | ours fit / authors' function |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, r in results.items():
        m, q = r["median"], r["ratios"]
        rows.append(
            f"| {batch} | {m['authors_eager']:.1f} | {m['authors_function']:.1f} | {m['authors_tfdata']:.1f} | "
            f"{m['ours_fp32']:.1f} | {m['ours_bf16']:.1f} | {m['ours_fit']:.1f} ({r['fit_precision']}) | "
            + " | ".join(f"{q[name]:.2f}×" for name in RATIOS)
            + " |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.authors_tf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--authors-repo", type=Path, required=True, help="a checkout of minhnhatvt/glamor-net")
    p.add_argument("--tf-python", type=Path, required=True, help="a Python with tensorflow and tf-keras installed")
    p.add_argument("--batches", default="4,32", help="comma-separated batch sizes (default: theirs, 4, and ours, 32)")
    p.add_argument("--repeats", type=int, default=3, help="rounds per batch (the median is reported)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data root of both end-to-end figures (default: a temporary SynthCAER of 712x400 images, 100 per class)",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    a = p.parse_args(argv)
    try:
        tf_version = check_setup(a.authors_repo, a.tf_python)
    except AuthorsSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keep_freed_memory()  # as training does (`callbacks.keep_freed_memory`): ours timed as it trains
    s = Settings.make(torch.device("cpu"))
    root, tmp = (a.data, None) if a.data else caer_size_root(quick=False)
    started = time.perf_counter()
    info = machine(s.device)
    try:
        results = run(a.authors_repo, a.tf_python, [int(b) for b in a.batches.split(",")], a.repeats, s, root)
    except AuthorsSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    doc = {
        "date": dt.date.today().isoformat(),
        "machine": info,
        "tensorflow": tf_version,
        "authors_repo": str(a.authors_repo),
        "data": str(a.data) if a.data else "a temporary SynthCAER, 712x400, 100 training images per class",
        "elapsed_s": round(time.perf_counter() - started, 1),
        "results": results,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    path = unused_path(a.out, f"{doc['date']}-{kind_slug(doc['machine'])}-authors")
    path.write_text(json.dumps(doc, indent=1))
    print(
        f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
        f"TensorFlow {tf_version}; images/s, median of {a.repeats} alternated rounds (each ratio: the median of the "
        f"rounds' ratios); {doc['elapsed_s']:.0f} s\n"
    )
    print(table(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
