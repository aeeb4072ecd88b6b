"""`make bench`'s printed table: one markdown document made from the JSON document `run.summarise` writes, so
that a result file renders the same wherever it is read (`benchmarks.readme` renders the README's tables with it)."""

from __future__ import annotations

import math
import statistics

from benchmarks.common import FORMATS, PRECISIONS


def _f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def yes_no(flag) -> str:
    return "?" if flag is None else ("yes" if flag else "no")  # "?": a result file from before the key existed


def main_job_data(jobs: dict) -> str:
    """The line under the main job's table: what data its epochs trained on, and a warning when that is not what
    `make train` reads (the projection is then not the main job's). Files from before 2026-12-07 did not say."""
    j = next(iter(jobs.values()))
    if "as_make_train" not in j:
        return "Data: not recorded (a result from before 2026-12-07)."
    size = f"{j['train_images']:,} training images" if j.get("train_images") else "training images not recorded"
    if j["as_make_train"]:
        return f"Data: {size}, the SynthCAER `make train` reads."
    return f"Data: {size}, **not** the SynthCAER `make train` reads: the projection is not the main job's."


def table(doc: dict) -> str:
    """The printed (markdown) table."""
    m = doc["machine"]
    gpu = f", GPU {m['cuda']['name']}" if m.get("cuda") else ""
    lines = [
        f"# glamor-lightning benchmark, {doc['date']}{' (QUICK: smoke test only)' if doc['quick'] else ''}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads){gpu}; AMX "
        f"{yes_no(m.get('amx'))}, native bf16 {yes_no(m.get('native_bf16'))}; torch "
        f"{m['torch']}; device {m['device']}; 1-min load at start {m.get('load_avg_1m', '?')}; malloc keeps freed "
        f"memory {yes_no(m.get('keeps_freed_memory'))}. "
        f"Batch {doc['settings']['batch']}; each figure the median of up to {doc['settings']['repeats']} "
        f"repeats after warm-up; {doc['elapsed_s']:.0f} s in all.",
        "",
    ]
    bbs = doc["backbones"]
    if any("model_only_grid_ips" in e for e in bbs.values()):
        cols = [f"{p} {'NCHW' if f == 'nchw' else 'CL'}" for p in PRECISIONS for f in FORMATS]
        lines += [
            "## Model-only training (images/s: forward + backward + SGD step, uint8 batch in memory)",
            "",
            "| backbone | params | fwd GFLOPs/img | " + " | ".join(cols) + " | best |",
            "|---|---:|---:|" + "---:|" * len(cols) + "---|",
        ]
        for b, e in bbs.items():
            g = e.get("model_only_grid_ips", {})
            best = e.get("best", {})
            best_name = f"{best.get('precision')}{' CL' if best.get('channels_last') else ''}"
            lines.append(
                f"| {b} | {_f(e.get('params'), 0)} | {_f(e.get('forward_gflops_per_image'), 3)} | "
                + " | ".join(_f(g.get(f"{p}/{f}")) for p in PRECISIONS for f in FORMATS)
                + f" | {best_name} |"
            )
        lines.append("")
    if "rewrites" in doc:
        from benchmarks.rewrites import table_lines

        lines += table_lines(doc["rewrites"])
    if "allocator" in doc:
        from benchmarks.allocator import table_lines as allocator_lines

        lines += allocator_lines(doc["allocator"])
    if "compile" in doc:
        from benchmarks.compiled import table_lines as compile_lines

        lines += compile_lines(doc["compile"])
    if any("full_ips" in e for e in bbs.values()):
        lines += [
            "## Full training vs model-only (best setting; repeats interleaved)",
            "",
            "| backbone | model-only img/s | full img/s | full / model-only | full, augment_on=device "
            "| ratio | achieved GFLOP/s | peak GFLOP/s | utilisation |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for b, e in bbs.items():
            if "full_ips" in e:
                lines.append(
                    f"| {b} | {_f(e['model_only_ips'])} | {_f(e['full_ips'])} | {_f(e['full_ratio'], 2)} | "
                    f"{_f(e['full_device_aug_ips'])} | {_f(e['full_device_aug_ratio'], 2)} | "
                    f"{_f(e.get('achieved_gflops'))} | {_f(e.get('peak_gflops'))} | "
                    f"{_f(e.get('utilisation_pct'))} % |"
                )
        lines.append("")
    if "lightning" in doc:
        lines += [
            "## Lightning's loop against a bare loop (images/s, median of the repeats)",
            "",
            "`Trainer.fit` with the default callbacks and the CSV logger, against the data module's loader into the "
            "same step; best setting, repeats alternated:",
            "",
            "| backbone | batch | steps | `Trainer.fit` | bare loop | fit / bare |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for b, per_batch in doc["lightning"].items():
            for batch, f in per_batch.items():
                lines.append(
                    f"| {b} | {batch} | {f['steps']} | {_f(statistics.median(f['fit']))} | "
                    f"{_f(statistics.median(f['bare']))} | {_f(f['fit_over_bare'], 3)} |"
                )
        lines.append("")
    if "main_job" in doc:
        lines += [
            "## The main job: `make train BACKBONE=...` (the entry point's `train()`, default config)",
            "",
            "Setup up to the first batch, then each epoch (training and validation); the projection is setup + "
            "max_epochs × the last epoch (the test of the best checkpoint, about one validation, not included):",
            "",
            "| backbone | recipe | precision chosen | setup (s) | epochs (s) | max_epochs | projected (min) |",
            "|---|---|---|---:|---|---:|---:|",
        ]
        for b, j in doc["main_job"].items():
            lines.append(
                f"| {b} | {j['recipe']} | {j['precision']} | {_f(j['setup_s'], 0)} | "
                f"{', '.join(_f(e) for e in j['epoch_s'])} | {j['max_epochs']} | {_f(j['projected_s'] / 60)} |"
            )
        lines += ["", main_job_data(doc["main_job"]), ""]
    if "peak" in doc:
        pk = doc["peak"]
        lines += [
            f"Matmul peak ({pk['matmul_n']}²): fp32 {_f(pk['fp32_gflops'])} GFLOP/s, bf16 "
            f"{_f(pk['bf16_gflops'])} GFLOP/s (best repeat). Training FLOPs ≈ 3 × forward.",
            "",
        ]
    for key, what in (("data_path", "the benchmark root"), ("data_path_caer_size", "CAER-S-sized 712×400 PNGs")):
        if key not in doc:
            continue
        d = doc[key]
        lines += [
            f"## Data path, {what} (images/s through a DataLoader, batch {d['batch']}, augmentation on, "
            f"{d['images']} images)",
            "",
            "| workers | decode PNG + crop + augment | packed cache + augment | cache / decode "
            "| cache + batched augment | batched / decode | cache + albumentations | albumentations / decode |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for w, f in d["workers"].items():
            lines.append(
                f"| {w} | {_f(f['decode_ips'])} | {_f(f['cache_ips'])} | {_f(f['cache_over_decode'], 1)}× | "
                f"{_f(f['cache_batched_ips'])} | {_f(f['cache_batched_over_decode'], 1)}× | "
                f"{_f(f['cache_albumentations_ips'])} | {_f(f['cache_albumentations_over_decode'], 1)}× |"
            )
        lines.append("")
    if "detection" in doc:
        d = doc["detection"]
        w, h = d["image_size"]
        full = "latency_full_ms" in d
        lines += [
            "## Face detection and prediction",
            "",
            f"MTCNN on {w}×{h} images: {_f(d['batch1_ips'])} img/s one at a time, {_f(d['batched_ips'])} img/s "
            f"in batches of {d['batch']} ({_f(d['batched_speedup'], 2)}×).",
            "",
        ]
        if full:
            lines += [
                f"MTCNN on the 1024×512 photos, one at a time: {_f(d['photo_detect_ips'])} img/s searched at a "
                f"longest side of {d['detect_max_side']} (`glamor predict`), {_f(d['photo_detect_full_ips'])} img/s "
                f"at full resolution ({_f(d['photo_detect_ips'] / d['photo_detect_full_ips'], 2)}×).",
                "",
            ]
        bound = f"; faces searched at a longest side of {d['detect_max_side']}, and at full resolution" if full else ""
        cols = ["faces", "found", "end to end ms", "detection ms"]
        if full:
            cols += ["found (full res.)", "end to end ms (full res.)", "detection ms (full res.)"]
        cols += [f"classify ms ({b})" for b in d["classify_ms"]]
        lines += [
            f"Prediction latency on a 1024×512 photo (`Predictor.predict`, {d['predict_backbone']}{bound}):",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---:|" * len(cols),
        ]
        for k in d["latency_ms"]:
            cells = [k, str(d["faces_found"][k]), _f(d["latency_ms"][k], 0), _f(d["detect_ms"][k], 0)]
            if full:
                cells += [
                    str(d["faces_found_full"].get(k, "–")),
                    _f(d["latency_full_ms"].get(k), 0),
                    _f(d["detect_full_ms"].get(k), 0),
                ]
            cells += [_f(c.get(k), 1) for c in d["classify_ms"].values()]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if d.get("bounds"):
            counts = list(d["latency_ms"])
            lines += [
                "MTCNN's longest side on the 1024×512 photos (`predict.DETECT_MAX_SIDE` is chosen from this): "
                "detection ms, and the largest difference of any box edge from full resolution's:",
                "",
                "| longest side | "
                + " | ".join(f"{k} face(s) ms" for k in counts)
                + " | boxes within (px) | same faces |",
                "|---:|" + "---:|" * len(counts) + "---:|---|",
            ]
            for b, c in d["bounds"].items():
                cells = [b, *(_f(c["detect_ms"].get(k), 0) for k in counts), _f(c["max_edge_px"], 1)]
                lines.append("| " + " | ".join(cells) + f" | {'yes' if c['same_faces'] else 'no'} |")
            lines.append("")
        if d.get("fold_ms"):
            lines += [
                "Batch norm folded into the convolutions, channels-last (`Predictor.classify`, "
                f"{d['predict_backbone']}, boxes known), against the module as trained:",
                "",
                "| faces | folded ms | as trained ms | as trained / folded |",
                "|---:|---:|---:|---:|",
            ]
            for k, c in d["fold_ms"].items():
                lines.append(
                    f"| {k} | {_f(c['folded'], 1)} | {_f(c['unfolded'], 1)} | {_f(c['unfolded'] / c['folded'], 2)}× |"
                )
            lines.append("")
    if "video" in doc:
        v = doc["video"]
        w, h = v["frame_size"]
        lines += [
            "## Video (`glamor predict` on a video)",
            "",
            f"Frames/s on {w}×{h} clips ({v['backbone']}; {v['batch_frames']} frames per detection and model batch"
            + (f"; detection at a longest side of at most {v['detect_max_side']}" if v.get("detect_max_side") else "")
            + "):",
            "",
            "| faces | found per frame | detection frames/s | classification frames/s | end to end frames/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for n, c in v["clips"].items():
            lines.append(
                f"| {n} | {min(c['faces_found'])} | {_f(c['detect_fps'])} | {_f(c['classify_fps'])} | "
                f"{_f(c['end_to_end_fps'])} |"
            )
        lines.append("")
    if "contention" in doc:
        from benchmarks.contention import PLACEMENTS

        c = doc["contention"]
        groups = {True: "on", False: "off", None: "unknown"}[c.get("autogroup")]
        lines += [
            "## Training beside a CPU load",
            "",
            f"The original model's training step (bf16-mixed, channels-last, batch {c['batch']}, {c['steps']} steps, "
            f"model only) alone and beside {c['busy_threads']} single-threaded busy loops on {c['cores']} cores, the "
            f"loops as another program (a session of their own) or in the training's session; the kernel's "
            f"autogroup {groups}. Slowdown (fair share):",
            "",
            "| OpenMP wait policy | alone img/s | another program: img/s | slowdown | same session: img/s | slowdown "
            "| threads alone / loaded (end) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, p in c["policies"].items():
            cells, ends = [], []
            # files from before 2026-12-07 measured one placement, the training's own session, in the policy itself
            placements = p.get("placements", {"same session": p})
            for placement in PLACEMENTS:
                q = placements.get(placement)
                if q is None:
                    cells.append("– | –")
                    ends.append("–")
                    continue
                cells.append(f"{_f(q['loaded_ips'])} | {q['slowdown']:.2f}× ({q['fair_slowdown']:.2f}×)")
                ends.append(str(q["threads_loaded_end"]))
            threads = f"{p['threads']} / {', '.join(ends)}"
            lines.append(f"| {name} | {_f(p['alone_ips'])} | {' | '.join(cells)} | {threads} |")
        lines.append("")
    return "\n".join(lines)
