"""`make bench`: measure training, data path, detection and prediction speed; print one table; write
benchmarks/results/latest.json (+ a dated copy and latest.md). See docs/benchmarks.md.

    python -m benchmarks.run                 # everything (about 40 min on 2 CPU cores)
    python -m benchmarks.run --quick         # a smoke test (under a minute); results/quick/
    python -m benchmarks.run --only data,detect --backbones original
    python -m benchmarks.run --only video    # frames/s of the video path (1 and 5 faces)
    python -m benchmarks.run --only contention  # training beside a fixed CPU load, per OpenMP wait policy
    python -m benchmarks.run --only compile     # torch.compile of the training step against eager
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.common import REPO, Settings, Timing, log  # noqa: E402
from benchmarks.table import table  # noqa: E402 (the printed table; its own module)
from glamor_lightning.allocator import keep_freed_memory  # noqa: E402

SECTIONS = (
    "flops",
    "model",
    "rewrites",
    "allocator",
    "compile",
    "data",
    "full",
    "lightning",
    "main_job",
    "detect",
    "video",
    "contention",
)
SCHEMA = 1


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (tests); figures mean little")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections of {','.join(SECTIONS)} (full needs model: added)",
    )
    p.add_argument("--backbones", default=None, help="comma-separated (default: original,mobilenetv2,resnet18)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default 5)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--full-workers",
        type=int,
        default=None,
        help="loader workers of the full-training figures (default 0 on CPU, min(8, cores) on GPU)",
    )
    p.add_argument("--data", default=None, help="data root (default data/synthcaer, else a temp SynthCAER)")
    p.add_argument("--predict-backbone", default="mobilenetv2", help="backbone of the end-to-end latency")
    p.add_argument(
        "--out", default=None, help="results folder (default benchmarks/results, benchmarks/results/quick with --quick)"
    )
    return p.parse_args(argv)


# -- the results ----------------------------------------------------------------------------------
def _data_path(data: dict, s: Settings, raw: dict, prefix: str) -> dict:
    """Images/s and ratios per loader worker count; headline figures are num_workers=0."""
    by_workers = {}
    for w, figs in data["timings"].items():
        by_workers[w] = {f"{name}_ips": tm.median for name, tm in figs.items()}
        for name in ("cache", "cache_batched", "cache_albumentations"):
            by_workers[w][f"{name}_over_decode"] = figs[name].median / figs["decode"].median
        for name, tm in figs.items():
            raw[f"{prefix}/{name}/workers{w}"] = tm.to_dict()
    return {
        "images": data["images"],
        "image_size": data.get("image_size"),
        "batch": s.batch,
        "workers": by_workers,
        **{
            k: by_workers["0"][k]
            for k in ("decode_ips", "cache_ips", "cache_batched_ips", "cache_albumentations_ips", "cache_over_decode")
        },
    }


def summarise(raw: dict, s: Settings, machine: dict, sections: list[str], elapsed: float) -> dict:
    """The JSON document (docs/benchmarks.md describes it)."""
    today = dt.date.today().isoformat()
    doc: dict = {
        "schema": SCHEMA,
        "date": today,
        "timestamp": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": s.quick,
        "elapsed_s": round(elapsed, 1),
        "machine": machine,
        "settings": {
            "batch": s.batch,
            "repeats": s.repeats,
            "min_repeats": s.min_repeats,
            "warmup": s.warmup,
            "repeat_s": s.repeat_s,
            "full_workers": s.full_workers,
            "sections": sections,
            "statistic": "median of repeats after warm-up",
        },
        "backbones": {},
        "raw": {},
    }
    peak = raw.get("flops", {}).get("peak")
    if peak:
        doc["peak"] = peak
    for b in s.backbones:
        entry: dict = {}
        cost = raw.get("flops", {}).get("costs", {}).get(b)
        if cost:
            entry.update(cost)
        grid = raw.get("model", {}).get("grid", {}).get(b)
        if grid:
            entry["model_only_grid_ips"] = {k: t.median for k, t in grid.items()}
            best = raw["model"]["best"][b]
            entry["best"] = {"precision": best["precision"], "channels_last": best["channels_last"]}
            entry["model_only_ips"] = grid[best["key"]].median
            for k, t in grid.items():
                doc["raw"][f"model_only/{b}/{k}"] = t.to_dict()
        full = raw.get("full", {}).get(b)
        if full:
            ref = full["model_only"].median
            entry["model_only_ips"] = ref  # re-measured side by side with the full figures
            best_key = raw["model"]["best"][b]["key"]
            entry["model_only_ips_grid_best"] = entry.get("model_only_grid_ips", {}).get(best_key)
            entry["full_ips"] = full["full"].median
            entry["full_ratio"] = full["full"].median / ref
            entry["full_device_aug_ips"] = full["full_device_aug"].median
            entry["full_device_aug_ratio"] = full["full_device_aug"].median / ref
            for k, t in full.items():
                doc["raw"][f"full/{b}/{k}"] = t.to_dict()
        if peak and cost and "model_only_ips" in entry:
            achieved = cost["train_gflops_per_image"] * entry["model_only_ips"]
            peak_key = "bf16_gflops" if entry["best"]["precision"] == "bf16-mixed" else "fp32_gflops"
            entry["achieved_gflops"] = achieved
            entry["peak_gflops"] = peak[peak_key]
            entry["utilisation_pct"] = 100.0 * achieved / peak[peak_key]
        doc["backbones"][b] = entry
    for key, name in (("data", "data_path"), ("data_caer_size", "data_path_caer_size")):
        if raw.get(key):
            doc[name] = _data_path(raw[key], s, doc["raw"], prefix=key)
    det = raw.get("detect")
    if det:
        lat = {k: 1000.0 / v.median for k, v in det["latency"].items()}
        doc["detection"] = {
            "image_size": det["image_size"],
            "batch": det["batch"],
            "batch1_ips": det["batch1_ips"].median,
            "batched_ips": det["batched_ips"].median,
            "batched_speedup": det["batched_ips"].median / det["batch1_ips"].median,
            "faces_found_per_image": det["faces_found_per_image"],
            "predict_backbone": det["predict_backbone"],
            "photo_size": [1024, 512],
            "faces_found": det["faces_found"],
            "latency_ms": lat,
            "detect_ms": {k: 1000.0 / v.median for k, v in det["detect"].items()},
            "classify_ms": {b: {k: 1000.0 / v.median for k, v in d.items()} for b, d in det["classify"].items()},
        }
        if det.get("latency_full"):  # the same photos at full resolution (latency_ms: with detect_max_side)
            full = {k: 1000.0 / v.median for k, v in det["latency_full"].items()}
            detect_full = {k: 1000.0 / v.median for k, v in det["detect_full"].items()}
            mean_ms = lambda ms: sum(ms.values()) / len(ms)  # noqa: E731
            doc["detection"].update(
                detect_max_side=det["detect_max_side"],
                faces_found_full=det["faces_found_full"],
                latency_full_ms=full,
                detect_full_ms=detect_full,
                latency_speedup={k: full[k] / lat[k] for k in lat if k in full},
                # MTCNN on the photos one at a time, averaged over them: with the bound and at full resolution
                photo_detect_ips=1000.0 / mean_ms(doc["detection"]["detect_ms"]),
                photo_detect_full_ips=1000.0 / mean_ms(detect_full),
            )
            for k, v in det["latency_full"].items():
                doc["raw"][f"predict/latency_full/{k}"] = v.to_dict()
        if det.get("bounds"):  # how DETECT_MAX_SIDE is chosen: time and boxes at each candidate bound
            doc["detection"]["bounds"] = {
                b: {
                    "detect_ms": {k: 1000.0 / t.median for k, t in c["detect"].items()},
                    "max_edge_px": c["max_edge_px"],
                    "same_faces": c["same_faces"],
                }
                for b, c in det["bounds"].items()
            }
        if det.get("fold"):  # Predictor's net with its norms folded, against the net as trained
            doc["detection"]["fold_ms"] = {
                k: {name: 1000.0 / t.median for name, t in c.items()} for k, c in det["fold"].items()
            }
        for name in ("batch1_ips", "batched_ips"):
            doc["raw"][f"detect/{name}"] = det[name].to_dict()
        for k, v in det["latency"].items():
            doc["raw"][f"predict/latency/{k}"] = v.to_dict()
    vid = raw.get("video")
    if vid:
        doc["video"] = {
            **{k: vid[k] for k in ("frame_size", "batch_frames", "frames", "backbone")},
            "detect_max_side": vid.get("detect_max_side"),
            "clips": {
                n: {
                    "faces_found": c["faces_found"],
                    **{k: c[k].median for k in ("detect_fps", "classify_fps", "end_to_end_fps")},
                }
                for n, c in vid["clips"].items()
            },
        }
        for n, c in vid["clips"].items():
            for k in ("detect_fps", "classify_fps", "end_to_end_fps"):
                doc["raw"][f"video/{n}/{k}"] = c[k].to_dict()
    if raw.get("contention"):
        doc["contention"] = raw["contention"]
    if raw.get("rewrites"):
        doc["rewrites"] = raw["rewrites"]
    if raw.get("allocator"):
        doc["allocator"] = raw["allocator"]
    if raw.get("compile"):
        doc["compile"] = raw["compile"]
    if raw.get("lightning"):
        doc["lightning"] = raw["lightning"]
    if raw.get("main_job"):
        doc["main_job"] = raw["main_job"]
    return doc


def write(doc: dict, text: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    latest = out / "latest.json"
    tmp = out / ".latest.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=_jsonable))
    tmp.replace(latest)
    dated = common.unused_path(out, f"{doc['date']}-{common.kind_slug(doc['machine'])}")
    shutil.copyfile(latest, dated)
    (out / "latest.md").write_text(text + "\n")
    if doc["quick"] and out.name == "quick":  # smoke-test figures are not results to keep
        (out / ".gitignore").write_text("*\n")
    return [latest, dated, out / "latest.md"]


def _jsonable(x):
    if isinstance(x, Timing):
        return x.to_dict()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x))


# -- the run ----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    # as training does (`callbacks.keep_freed_memory`), so that every section measures what training gets; the
    # `allocator` section compares the two in fresh processes
    machine_keeps = keep_freed_memory()
    device = common.pick_device(args.device)
    backbones = tuple(args.backbones.split(",")) if args.backbones else None
    s = Settings.make(
        device,
        quick=args.quick,
        repeats=args.repeats,
        batch=args.batch,
        backbones=backbones,
        full_workers=args.full_workers,
    )
    sections = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    if {"full", "lightning"} & set(sections) and "model" not in sections:
        sections.insert(0, "model")
    machine = common.machine(device)
    machine["keeps_freed_memory"] = machine_keeps
    log(
        f"device {device}, {machine['cpu']} ({machine['cores']} cores), torch {machine['torch']}, "
        f"sections {sections}{', QUICK' if s.quick else ''}"
    )
    started = time.perf_counter()
    raw: dict = {}
    root, tmp = (None, None)
    try:
        if {"data", "full", "lightning", "main_job", "detect"} & set(sections):
            root, tmp = common.bench_root(args.data, s.quick)
        if "flops" in sections:
            from benchmarks import flops

            raw["flops"] = flops.run(s)
        if "model" in sections:
            from benchmarks import model_throughput

            raw["model"] = model_throughput.run(s)
        if "rewrites" in sections:
            from benchmarks import rewrites

            raw["rewrites"] = rewrites.run(s)
        if "allocator" in sections and device.type == "cpu":
            if machine_keeps:
                from benchmarks import allocator

                raw["allocator"] = allocator.run(s)
            else:
                log("allocator: skipped, this machine's malloc is not glibc's")
        if "compile" in sections:
            if device.type == "cpu":
                from benchmarks import compiled

                raw["compile"] = compiled.run(s)
            else:
                log("compile: a CPU-training figure, skipped on a GPU device")
        if "data" in sections:
            from benchmarks import data_path

            raw["data"] = data_path.run(root, s)
            caer_root, caer_tmp = common.caer_size_root(s.quick)
            try:
                raw["data_caer_size"] = data_path.run(caer_root, s)
            finally:
                shutil.rmtree(caer_tmp, ignore_errors=True)
        if "full" in sections:
            from benchmarks import full_training

            raw["full"] = full_training.run(root, raw["model"]["best"], s)
        if "lightning" in sections:
            from benchmarks import lightning_loop

            raw["lightning"] = lightning_loop.run(root, raw["model"]["best"], s, batches=tuple(sorted({4, s.batch})))
        if "main_job" in sections:
            from benchmarks import main_job

            job_root, job_tmp, as_make_train = common.main_job_root(args.data, s.quick, root)
            try:
                raw["main_job"] = main_job.run(job_root, s, as_make_train)
            finally:
                if job_tmp is not None:
                    shutil.rmtree(job_tmp, ignore_errors=True)
        if "detect" in sections:
            from benchmarks import detection

            raw["detect"] = detection.run(root, s, args.predict_backbone)
        if "video" in sections:
            from benchmarks import video

            raw["video"] = video.run(s, args.predict_backbone)
        if "contention" in sections:
            if device.type == "cpu":
                from benchmarks import contention

                raw["contention"] = contention.run(s)
            else:
                log("contention: a CPU-training figure, skipped on a GPU device")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return summarise(raw, s, machine, sections, time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    doc = run(args)
    text = table(doc)
    print(text)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / ("quick" if args.quick else "")
    for path in write(doc, text, out):
        log(f"wrote {path}")
    if not doc["quick"] and out.resolve() == (REPO / "benchmarks" / "results").resolve():
        log("the README's tables are made from these files: run `python -m benchmarks.readme` (docs/benchmarks.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
