"""``crossfuse bench perf``: where a run's time and memory go, written to ``docs/performance.md``.

Three measurements, each a table of the page:

- :func:`extraction_rates`: items per second of the extract stage end to end (read the
  preprocessed files, hash, decode and resize in workers, run the network, write the
  cache) for each backend and device, on an empty feature cache.
- :func:`run_costs`: a cold ``crossfuse run`` (empty caches), a warm one that changes only
  the fusion settings, and the same stage functions called in one process; per stage
  seconds and peak resident memory, read back from the runs' ``performance/`` metrics.
- :func:`scaling`: the same run on generated data at several sizes.

Ratios are measured within one invocation, on one machine, which the page names.

Example
-------
>>> rows = extraction_rates(cfg, Path("pre"), [("cpu", "torch"), ("cpu", "onnxruntime")])  # doctest: +SKIP
>>> rows[0]["items_per_s"]                                                                 # doctest: +SKIP
51.3
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crossfuse.config import RunConfig


def default_setups() -> list[tuple[str, str]]:
    """``(device, backend)`` pairs this machine can run: PyTorch and ONNX Runtime on the CPU,
    PyTorch on the GPU when there is one."""
    import torch

    from crossfuse.encoders.onnx_backend import onnxruntime_available

    setups = [("cpu", "torch")] + ([("cpu", "onnxruntime")] if onnxruntime_available() else [])
    return setups + ([("cuda", "torch")] if torch.cuda.is_available() else [])


def extraction_rates(cfg: RunConfig, preprocessed: Path, setups: list[tuple[str, str]],
                     modalities: list[str] | None = None,
                     extra: dict[str, list[str]] | None = None,
                     layouts: dict[str, Path] | None = None) -> list[dict]:
    """Items per second of :func:`crossfuse.features.extract.extract`, empty cache each time.

    Each row starts from an empty feature cache and a fresh encoder (its load is timed);
    an ONNX export is made once, before the first row that needs it, and shared.
    ``setups`` are ``(device, backend)`` pairs; ``extra`` names further variants as
    ``{label: [overrides]}`` (e.g. no decode workers) and ``layouts`` other preprocessed
    folders of the same rows as ``{label: folder}`` (e.g. :func:`file_layout_copy`), each
    run on the last setup.
    """
    from crossfuse.data.modalities import get_modality
    from crossfuse.encoders import EncoderUnavailable, build_encoder, place_encoder
    from crossfuse.features.extract import extract

    modalities = modalities or cfg.modalities
    last = setups[-1]
    variants = [(device, backend, "", [], preprocessed) for device, backend in setups]
    variants += [(*last, label, overrides, preprocessed) for label, overrides in (extra or {}).items()]
    variants += [(*last, label, [], folder) for label, folder in (layouts or {}).items()]
    rows = []
    exports = Path(tempfile.mkdtemp(prefix="crossfuse-perf-onnx-"))  # one export, not one per row
    for modality in modalities:  # made before the clock starts: a run reuses its cached export
        if any(backend == "onnxruntime" for _, backend, *_ in variants):
            with contextlib.suppress(EncoderUnavailable):
                place_encoder(build_encoder(cfg.extract.encoders[modality], modality), "cpu",
                              "onnxruntime", exports)
    for modality in modalities:
        for device, backend, label, overrides, folder in variants:
            if folder != preprocessed and not get_modality(modality).media:
                continue  # another layout of the media: the texts are the same
            with tempfile.TemporaryDirectory(prefix="crossfuse-perf-") as work:
                (Path(work) / "cache").mkdir()
                (Path(work) / "cache" / "onnx").symlink_to(exports, target_is_directory=True)
                run_cfg = cfg.model_copy(deep=True)
                run_cfg.extract.device, run_cfg.extract.backend = device, backend
                run_cfg.extract.cache_dir = str(Path(work) / "cache")
                run_cfg.extract.encoders = {modality: cfg.extract.encoders[modality]}
                run_cfg = _overridden(run_cfg, overrides)
                started = time.perf_counter()
                try:
                    result = extract(run_cfg, folder, Path(work) / "features")
                except EncoderUnavailable:  # this encoder has no such backend: no row
                    continue
                seconds = time.perf_counter() - started
            rows.append({"modality": modality, "encoder": cfg.extract.encoders[modality],
                         "runtime": result.runtime[modality] + (f", {label}" if label else ""),
                         "items": result.encoded[modality], "seconds": round(seconds, 2),
                         "items_per_s": round(result.encoded[modality] / seconds, 1),
                         # without the encoder's load and device set-up
                         "encoding_items_per_s": round(result.encoded[modality]
                                                       / max(result.seconds[modality], 1e-9), 1)})
    shutil.rmtree(exports, ignore_errors=True)
    return rows


def file_layout_copy(preprocessed: Path, out: Path) -> Path:
    """``preprocessed`` rewritten in the layout before media shards: one file per media item
    (``images/<n>.png``, ``audio/<n>.npy``), cells naming the files. Extraction reads it
    (decoding every PNG); the benchmark compares the two layouts on the same rows."""
    import pandas as pd
    from PIL import Image

    from crossfuse.data.audio import write_waveform
    from crossfuse.data.modalities import MODALITY_REGISTRY, get_modality, media_modalities
    from crossfuse.data.preprocess import SAMPLES_FILE

    shutil.copytree(preprocessed, out, ignore=shutil.ignore_patterns("shard-*", "index.json"))
    samples = pd.read_parquet(Path(preprocessed) / SAMPLES_FILE)
    for m in media_modalities([c for c in samples.columns if c in MODALITY_REGISTRY]):
        modality, cells = get_modality(m), samples[m].tolist()
        reader = modality.reader(preprocessed)
        for n, cell in enumerate(cells):
            if cell:
                item = reader.load([cell])[0]
                cells[n] = f"{modality.folder}/{n:07d}" + (".png" if m == "image" else ".npy")
                if m == "image":
                    Image.fromarray(item).save(out / cells[n], format="PNG")
                else:
                    write_waveform(out / cells[n], item)
        samples[m] = cells
    samples.to_parquet(out / SAMPLES_FILE, index=False)
    return out


def _overridden(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    if not overrides:
        return cfg
    from crossfuse.config import apply_override

    tree = json.loads(cfg.to_json())
    for assignment in overrides:
        apply_override(tree, assignment)
    return RunConfig.model_validate(tree)


def preprocessed_copy(cfg: RunConfig, out: Path) -> Path:
    """Preprocess ``cfg``'s dataset into ``out`` (every row; validation is not repeated here)."""
    from crossfuse.data.preprocess import preprocess

    preprocess(cfg, Path(cfg.data.path), out)
    return out


def crossfuse_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "crossfuse"), *args]


def stage_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The ``stage_*`` metrics (flat names) of one pipeline run."""
    import mlflow

    from crossfuse.tracking import run_metrics

    client = mlflow.tracking.MlflowClient(tracking_uri)
    return {k: v for k, v in run_metrics(client.get_run(run_id)).items() if k.startswith("stage_")}


def timed_run(args: list[str], log: Path) -> float:
    """Wall seconds of one ``crossfuse`` command; its output goes to ``log``."""
    started = time.perf_counter()
    with open(log, "a") as out:
        subprocess.run(crossfuse_command(*args), check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def latest_run_id(tracking_uri: str) -> str:
    """The newest pipeline run (not a nested one) in the store: each benchmark has its own."""
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string="tags.`mlflow.parentRunId` IS NULL",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


def isolated(config: Path | None, work: Path, *overrides: str) -> list[str]:
    """``--config``/``--set`` arguments that keep every output, cache and store under ``work``
    (``config`` None: the command's default, configs/default.yaml)."""
    args = ["--config", str(config)] if config else []
    for o in (f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
              f"mlflow.artifact_root={work}/mlartifacts",
              f"pipeline.pipeline_root={work}/kfp", f"extract.cache_dir={work}/cache",
              f"pipeline.stage_cache_dir={work}/stages", f"train.checkpoint_dir={work}/checkpoints",
              *overrides):
        args += ["--set", o]
    return args


def run_costs(config: Path | None, work: Path, warm_change: str, log: Path) -> dict:
    """Cold run, warm run (``warm_change`` only), and the stages in one process, each timed.

    Returns ``{"cold": {...}, "warm": {...}, "in_process": {...}}``, each with ``wall`` seconds
    and the run's ``stage_*`` metrics.
    """
    uri = f"sqlite:///{work}/mlflow.db"
    args = isolated(config, work)
    out = {"cold": {"wall": timed_run(["run", *args], log)}}
    out["cold"].update(stage_metrics(uri, latest_run_id(uri)))
    out["warm"] = {"wall": timed_run(["run", *args, "--set", warm_change], log)}
    out["warm"].update(stage_metrics(uri, latest_run_id(uri)))
    in_process = work / "in-process"
    out["in_process"] = {"wall": timed_run(["bench", "stages", *isolated(config, in_process)],
                                           log)}
    in_uri = f"sqlite:///{in_process}/mlflow.db"
    out["in_process"].update(stage_metrics(in_uri, latest_run_id(in_uri)))
    return out


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def scaling(sizes: list[tuple[int, str]], work: Path, log: Path) -> list[dict]:
    """``crossfuse run`` on generated data of each ``(rows, fusion method)``, cold.

    Returns one row per size: rows, method, wall seconds, and each stage's seconds and peak
    RSS. Each size's folder is removed once measured (100,000 rows of pixels are 15 GB).
    """
    rows = []
    for size, method in sizes:
        folder = fresh(work / f"rows-{size}-{method}")
        per_class = max(1, round(size / 6))
        subprocess.run(crossfuse_command("data", "generate", "--per-class", str(per_class),
                                         "--out", str(folder / "data")),
                       check=True, stdout=subprocess.DEVNULL)
        args = isolated(None, folder, f"data.path={folder / 'data'}", "data.name=scaling",
                        f"fusion.method={method}")
        wall = timed_run(["run", *args], log)
        uri = f"sqlite:///{folder}/mlflow.db"
        metrics = stage_metrics(uri, latest_run_id(uri))
        rows.append({"rows": 6 * per_class, "method": method, "wall": round(wall, 1), **metrics})
        shutil.rmtree(folder, ignore_errors=True)
    return rows


# (label, stage name in a KFP run, stage name in one process). With one extract part (the
# default) the pipeline has no merge task; with more, the merge logs as "extract".
TABLE_STAGES = (("validate", "validate", "validate"), ("preprocess", "preprocess", "preprocess"),
                ("extract", "extract", "extract"), ("train", "train", "train"),
                ("evaluate", "evaluate", "evaluate"), ("register", "register", "register"))


def stage_table(costs: dict) -> str:
    """Markdown: per stage, cold and warm task seconds (process start to end, imports included)
    and their ratio, the stage's seconds in one process, and the cold task's peak RSS."""
    lines = ["| stage | cold task s | warm task s | warm / cold | warm own s | in one process s | "
             "peak RSS MB (cold task) |", "|---|---|---|---|---|---|---|"]
    cold, warm, inproc = costs["cold"], costs["warm"], costs["in_process"]

    def num(d: dict, key: str, fmt: str = ".1f") -> str:
        return format(d[key], fmt) if key in d else "—"

    for label, kfp, alone in TABLE_STAGES:
        key = f"stage_{kfp}_process_seconds"
        ratio = f"{warm[key] / cold[key]:.2f}" if key in cold and key in warm else "—"
        alone_s = num(inproc, f"stage_{alone}_seconds") if alone else "—"
        lines.append(f"| {label} | {num(cold, key)} | {num(warm, key)} | {ratio} | "
                     f"{num(warm, f'stage_{kfp}_seconds')} | {alone_s} | "
                     f"{num(cold, f'stage_{kfp}_peak_rss_mb', '.0f')} |")
    lines.append(f"| **whole command** | {cold['wall']:.1f} | {warm['wall']:.1f} | "
                 f"{warm['wall'] / cold['wall']:.2f} | | {inproc['wall']:.1f} | |")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    """Markdown: per size, method, wall seconds, seconds per 1,000 rows, each stage's seconds,
    and the largest task's peak RSS."""
    head = ("| rows | method | wall s | s per 1k rows | "
            + " | ".join(f"{label} s" for label, _, _ in TABLE_STAGES)
            + " | peak RSS MB (max over tasks) |")
    lines = [head, "|" + "---|" * (5 + len(TABLE_STAGES))]
    for r in rows:
        stage_s = " | ".join(f"{r.get(f'stage_{kfp}_process_seconds', float('nan')):.1f}"
                             for _, kfp, _ in TABLE_STAGES)
        lines.append(f"| {r['rows']:,} | {r.get('method', 'late')} | {r['wall']:.0f} | "
                     f"{1000 * r['wall'] / r['rows']:.1f} | {stage_s} | {peak_rss(r):.0f} |")
    return "\n".join(lines)


def peak_rss(row: dict) -> float:
    """The largest task's peak resident memory (MB) of one run's ``stage_*`` metrics."""
    return max(v for k, v in row.items() if k.endswith("_peak_rss_mb"))


BEGIN, END = "<!-- bench-perf:begin -->", "<!-- bench-perf:end -->"


SHARDS_ROW, PNG_ROW = "onnxruntime on cpu", "onnxruntime on cpu, from per-image PNGs"


def goals(results: dict, gpu: dict | None) -> list[str]:
    """The issue's bars, each with the measured figure and met / not met."""
    costs, ext = results["costs"], results["extraction"]
    rate = {r["runtime"]: r["items_per_s"] for r in ext if r["modality"] == "image"}
    warm_ratio = costs["warm"]["wall"] / costs["cold"]["wall"]
    kfp_ratio = costs["cold"]["wall"] / costs["in_process"]["wall"]
    own = {_stage(k, "_seconds"): v for k, v in costs["warm"].items()
           if k.endswith("_seconds") and not k.endswith("_process_seconds")}
    slowest = max(own, key=own.get) if own else None
    gpu_rows = (gpu or {}).get("rows", [])
    gpu_best = max((r["items_per_s"] for r in gpu_rows), default=None)

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = []
    if "torch on cpu" in rate and SHARDS_ROW in rate:
        best, torch_rate = rate[SHARDS_ROW], rate["torch on cpu"]
        lines.append(f"- Image extraction on the CPU ≥ 90 img/s end to end: {best:.0f} img/s "
                     f"({best / torch_rate:.1f}x PyTorch's {torch_rate:.0f}) — "
                     f"{verdict(best >= 90)}.")
    if SHARDS_ROW in rate and PNG_ROW in rate:
        speedup = rate[SHARDS_ROW] / rate[PNG_ROW]
        lines.append(f"- CPU image extraction (ONNX Runtime) from mapped shards ≥ 1.3x the same "
                     f"from per-image PNGs: {rate[SHARDS_ROW]:.0f} against {rate[PNG_ROW]:.0f} "
                     f"img/s, {speedup:.2f}x — {verdict(speedup >= 1.3)}.")
    if gpu_best and gpu.get("layout") == "mapped shards":
        lines.append(f"- GPU extraction ≥ 2,500 img/s end to end: {gpu_best:.0f} img/s on "
                     f"{gpu['machine']} — {verdict(gpu_best >= 2500)}.")
    else:
        lines.append("- GPU extraction ≥ 2,500 img/s end to end from mapped shards: **not "
                     "measured** — no GPU machine was lent to this work since the shard layout"
                     + (f"; the GPU rows below ({gpu_best:.0f} img/s at best) were measured "
                        f"decoding per-image PNGs" if gpu_best else "") + ".")
    lines += [
        f"- A re-run that changes only the fusion settings ≤ 0.15 of a cold run: "
        f"{warm_ratio:.2f} ({costs['warm']['wall']:.1f} s against {costs['cold']['wall']:.1f} s)"
        f" — {verdict(warm_ratio <= 0.15)}.",
        f"- Every warm task's own work (its stage, after start-up) under 2 s: the longest is "
        f"`{slowest}` at {own[slowest]:.1f} s — {verdict(own[slowest] < 2)}." if slowest else
        "- Warm tasks' own work: not measured.",
        f"- `crossfuse run` ≤ 1.3x the same stages in one process: {kfp_ratio:.2f}x — "
        f"{verdict(kfp_ratio <= 1.3)}."]
    fixed = [r for r in results["scaling"] if r.get("method", "late") != "auto"]
    if fixed:
        big = max(fixed, key=lambda r: r["rows"])
        lines.append(f"- Peak RSS under 3 GB at {big['rows']:,} rows on {results['machine']}: "
                     f"{peak_rss(big):,.0f} MB — {verdict(peak_rss(big) < 3000)}.")
    auto = sorted((r for r in results["scaling"] if r.get("method") == "auto"),
                  key=lambda r: r["rows"])
    if len(auto) >= 2:
        per_row = [r["wall"] / r["rows"] for r in auto if r["rows"] >= 6000]
        linear = all(b <= a * 1.05 for a, b in zip(per_row, per_row[1:], strict=False))
        lines.append("- `auto`'s wall time grows no worse than linearly from 6,000 rows up: "
                     + ", ".join(f"{1000 * r['wall'] / r['rows']:.1f} s per 1,000 rows at "
                                 f"{r['rows']:,}" for r in auto if r["rows"] >= 6000)
                     + f" — {verdict(linear)}.")
    return lines


def render(results: dict, gpu: dict | None) -> str:
    """The measured part of docs/performance.md (tables + the goals as measured)."""
    from crossfuse.bench.encoders import markdown_table

    costs, ext = results["costs"], results["extraction"]
    parts = [BEGIN, f"Measured on **{results['machine']}** by `{results['command']}` "
             f"({results['date']}).", "", "### The goals, as measured", "",
             *goals(results, gpu), "",
             "### Extraction, end to end (empty feature cache; preprocessed items → vectors in "
             "the cache)", "", markdown_table(ext)]
    if gpu:
        parts += ["", f"On **{gpu['machine']}**, a lent GPU machine: "
                  f"{gpu.get('command', 'crossfuse bench extraction')}.", "",
                  markdown_table(gpu["rows"])]
    parts += ["", "### Cold run, warm run, one process (sample data, `configs/default.yaml`)", "",
              f"Cold: empty feature cache and stage records. Warm: the same command again with "
              f"`--set {results['warm_change']}`. One process: `crossfuse bench stages`, every stage "
              f"function called in one Python process, cold. Task seconds run from the task "
              f"process's start (Python imports included) to the end of its stage; own seconds "
              f"are the stage's work after start-up.", "",
              stage_table(costs), "",
              "### Scaling (generated data, cold)", "",
              scaling_table(results["scaling"]), END]
    return "\n".join(parts)


def _stage(key: str, suffix: str = "_process_seconds") -> str:
    return key.removeprefix("stage_").removesuffix(suffix)


def write_page(page: Path, measured: str) -> None:
    """Put ``measured`` between the page's markers (the prose around them is kept)."""
    text = page.read_text() if page.is_file() else f"# Performance\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(head + measured + tail)
