"""Bench results as files: benchmarks/<date>-<card>.json, a markdown table and a PNG bar chart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ourvidz.outputs import atomic_replace, to_json


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Rows of several bench calls on the same card and versions (a long bench is split in calls)."""
    if old.get("card") != new.get("card") or old.get("versions") != new.get("versions"):
        raise ValueError(f"cannot merge results from {old.get('card')} into a run on {new.get('card')}")
    merged = {**old, **{k: v for k, v in new.items() if k not in ("rows", "ablation", "cold_start")}}
    for key in ("rows", "ablation", "cold_start"):
        merged[key] = {**old.get(key, {}), **new.get(key, {})}
    done = {job for job, row in merged["rows"].items() if "ourvidz" in row}
    skipped = {s.split()[0]: s for s in old.get("skipped", []) + new.get("skipped", []) if s.split()[0] not in done}
    merged["skipped"] = sorted(skipped.values())
    # One entry per bench process (keyed by its start time): a call saves after every row.
    merged["calls"] = {**old.get("calls", {}), **new.get("calls", {})}
    return merged


def slug(card: str) -> str:
    name = card.split("(")[-1].rstrip(")") if "(" in card else card
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40]


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def markdown(results: dict[str, Any]) -> str:
    v = results["versions"]
    lines = [
        f"Card: {results['card']}; torch {v.get('torch')}, diffusers {v.get('diffusers')}, transformers "
        f"{v.get('transformers')}; weights: {results['weights']}; times are medians over n measured runs "
        f"(min-max and n in brackets); measured bf16 matmul rate: "
        + (f"{results['matmul_tflops']:.0f} TFLOP/s" if results.get("matmul_tflops") else "n/a"),
        "",
        "| job type | GPUs | seed doc (RTX 6000 Ada) | plain diffusers (1 GPU) | ourvidz | ratio | ratio without saving | ourvidz warm-up (2 steps, compiles) | achieved TFLOP/s | floor | peak GPU mem | PSNR vs plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results["rows"].items():
        job, gpus = r.get("job_type", key), r.get("gpus", 1)
        if "ourvidz" not in r:
            lines.append(f"| {job} | {gpus} | | | failed: {r.get('error', 'not finished')} | | | | | | | |")
            continue
        o, p = r["ourvidz"], r["plain"]
        doc = f"{r['seed_doc']['seconds']:g} s ({r['seed_doc']['status']})" if r.get("seed_doc") else "-"
        tf = f"{r['achieved_tflops']:.0f}" if r.get("achieved_tflops") else "-"
        mem = f"{o['peak_gpu_memory_gb']:.1f} GB" if o.get("peak_gpu_memory_gb") else "-"
        psnr = r["exact"]["psnr_db"]
        unsaved = f"{r['ratio_unsaved']:.2f}x" if r.get("ratio_unsaved") else "-"
        lines.append(
            f"| {job} | {gpus} | {doc} | {_s(p['median'])} [{p['min']:.2f}-{p['max']:.2f}, n={len(p['runs'])}] | "
            f"{_s(o['median'])} [{o['min']:.2f}-{o['max']:.2f}, n={len(o['runs'])}] | **{r['ratio']:.2f}x** | {unsaved} | {_s(o['first'])} | {tf} | {_s(r.get('floor_s'))} | "
            f"{mem} | {'identical' if psnr == float('inf') else f'{psnr:.1f} dB'} |")
    lines += scaling(results)
    lossy = {job: r["lossy"] for job, r in results["rows"].items() if r.get("lossy")}
    if lossy:
        lines += ["", "Lossy opt-in (never on by default): first-block cache on the Wan transformer", "",
                  "| job type | threshold | median | ratio to plain | PSNR vs exact ourvidz |", "|---|---|---|---|---|"]
        for job, lo in lossy.items():
            if "error" in lo:
                lines.append(f"| {job} | {lo['step_cache']:g} | failed: {lo['error']} | | |")
            else:
                lines.append(f"| {job} | {lo['step_cache']:g} | {_s(lo['median'])} | {lo['ratio']:.2f}x | {lo['psnr_vs_exact_db']:.1f} dB |")
    for skipped in results.get("skipped", []):
        lines.append(f"\nNot measured in this run: {skipped}")
    if results.get("ablation"):
        lines += ["", "Ablation (speed-ups added one at a time, cumulative; same job, same process):", "",
                  "| job type | plain diffusers | + speed-up | median | max/min | denoise | ratio to plain | warm-up (2 steps) "
                  "| vs the stage before | vs plain |", "|---|---|---|---|---|---|---|---|---|---|"]
        for job, stages in results["ablation"].items():
            plain = results["rows"][job]["plain"]["median"]
            for st in stages:
                added = "(none: ourvidz with every switch off)" if st["added"] == "none" else st["added"]
                spread = f"{st['max'] / st['min']:.2f}" if st.get("min") else "-"
                lines.append(f"| {job} | {_s(plain)} | {added} | {_s(st['median'])} | {spread} | "
                             f"{_s(st.get('denoise_median'))} | {plain / st['median']:.2f}x | {_s(st['first'])} | "
                             f"{_exact(st, 'previous')} | {_exact(st, 'plain')} |")
                lines += [f"| | | note: {n} | | | | | | | |" for n in st.get("notes", [])]
    if results.get("cold_start"):
        lines += cold_start_table(results["cold_start"])
    return "\n".join(lines) + "\n"


def _exact(stage: dict, name: str) -> str:
    if f"psnr_vs_{name}_db" not in stage:
        return "-"
    db, diff = stage[f"psnr_vs_{name}_db"], stage[f"max_abs_diff_vs_{name}"]
    return "identical" if db == float("inf") else f"{db:.1f} dB (max diff {diff})"


# Issue #12's cold-start targets on an H200 (process start to files on disk, one GPU).
COLD_TARGETS = {"sdxl_image_fast": 12.0, "video_fast": 40.0}


def _gb(n) -> str:
    return "-" if not n else f"{n / 1e9:.2f} GB"


def cold_start_table(cold: dict[str, Any]) -> list[str]:
    """One row a job. Rows of older runs (random weights built in memory, no load route) show '-'
    where they have no value."""
    lines = ["", "Cold start: `ourvidz generate` from process start to files on disk (one job; by default a "
             "one-job process does not compile; --compile timed with an empty and then a warm inductor cache). "
             "Random weights are first written as user files (an SDXL single file, a Wan diffusers folder) and "
             "loaded through --models; the first process reads them with their pages dropped from the page cache:", "",
             "| job type | weights read | written in | wall time (default) | target (H200) | of which load | load per component "
             "| of which denoise | files in page cache | --compile, empty cache | --compile, warm cache |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for job, c in cold.items():
        routes = c.get("route") or {}
        read = ", ".join(f"{fam}: {route}" for fam, route in routes.items()) or "random, built in memory"
        if c.get("bytes_read"):
            read += f" ({_gb(c['bytes_read'])}" + (f", page cache {c['page_cache']}" if c.get("page_cache") else "") + ")"
        write = c.get("write") or {}
        written = ", ".join(f"{fam} {w['write_s']:.1f} s ({_gb(w['bytes'])})" for fam, w in write.items()) or "-"
        per = ", ".join(f"{k} {v:.2f}" for k, v in (c.get("load") or {}).items()) or "-"
        target = COLD_TARGETS.get(job)
        verdict = "-" if target is None else f"{target:g} s " + ("met" if c["wall_s"] <= target else "missed")
        wall = _s(c["wall_s"])
        if c.get("files_at_s") is not None:  # files on disk before the process has exited
            wall += f" (files at {_s(c['files_at_s'])}; start-up {_s(c.get('startup_s'))} before the job)"
        lines.append(f"| {job} | {read} | {written} | {wall} | {verdict} | {_s(c.get('load_s'))} | {per} | "
                     f"{_s(c.get('denoise_s'))} | {_s(c.get('cached_wall_s'))} | {_s(c.get('compile_first_s'))} | "
                     f"{_s(c.get('compile_cached_s'))} |")
    return lines


def scaling(results: dict[str, Any]) -> list[str]:
    """Each job type measured on several GPU counts: the whole job's and the denoise's speed-up
    over ourvidz on one GPU, and the denoise's efficiency against linear (speed-up / GPUs)."""
    by_job: dict[str, dict[int, dict]] = {}
    for key, r in results["rows"].items():
        if "ourvidz" in r:
            by_job.setdefault(r.get("job_type", key), {})[r.get("gpus", 1)] = r
    rows = []
    for job, runs in by_job.items():
        if 1 not in runs or len(runs) < 2:
            continue
        one = runs[1]["ourvidz"]
        for n in sorted(k for k in runs if k > 1):
            o = runs[n]["ourvidz"]
            d1, dn = one["phases"].get("denoise"), o["phases"].get("denoise")
            speed = d1 / dn if d1 and dn else None
            rows.append(f"| {job} | {n} | {_s(one['median'])} | {_s(o['median'])} | {one['median'] / o['median']:.2f}x | "
                        f"{_s(d1)} | {_s(dn)} | " + (f"{speed:.2f}x | {speed / n:.0%} |" if speed else "- | - |"))
    if not rows:
        return []
    return ["", "Scaling: ourvidz on N GPUs against ourvidz on one, same run (denoise: the transformer steps):", "",
            "| job type | GPUs | whole job, 1 GPU | whole job, N GPUs | speed-up | denoise, 1 GPU | denoise, N GPUs | denoise speed-up | efficiency vs linear |",
            "|---|---|---|---|---|---|---|---|---|"] + rows


def chart(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    jobs = [j for j, r in results["rows"].items() if "ourvidz" in r]  # one bar group a row (job x GPUs)
    series = [("seed doc (RTX 6000 Ada)", [(results["rows"][j].get("seed_doc") or {}).get("seconds", 0) for j in jobs]),
              ("plain diffusers", [results["rows"][j]["plain"]["median"] for j in jobs]),
              ("ourvidz", [results["rows"][j]["ourvidz"]["median"] for j in jobs])]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(jobs)), 4.5))
    width = 0.27
    for i, (label, values) in enumerate(series):
        ax.bar([x + (i - 1) * width for x in range(len(jobs))], values, width, label=label)
    ax.set_xticks(range(len(jobs)), jobs, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per job (log scale)")
    ax.set_title(f"{results['card']}, {results['weights']} weights", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_replace(path, buf.getvalue())


def write(results: dict[str, Any], out_dir: Path, append: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{results['date']}-{slug(results['card'])}"
    json_path = stem.with_suffix(".json")
    if append and json_path.is_file():
        results = merge(json.loads(json_path.read_text()), results)
    files = [atomic_replace(json_path, to_json(results)),
             atomic_replace(stem.with_suffix(".md"), markdown(results).encode())]
    png = chart(results, stem.with_suffix(".png"))
    return files + ([png] if png else [])
