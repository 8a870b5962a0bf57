"""The ``crossfuse`` command: the library's commands; ``pipelines.cli`` adds run, compile, submit.

The installed ``crossfuse`` script is :func:`pipelines.cli.main`, which has them all::

    crossfuse run [--data PATH] [--config FILE] [--set key=value ...]   # the whole pipeline, locally
    crossfuse data generate [--out data] [--per-class 120]             # the sample dataset
    crossfuse data fetch --dvc-file data.dvc --remote URL --out DIR    # a pinned data version
    crossfuse compile [--out pipelines/compiled/multimodal_fusion.yaml] # KFP IR YAML
    crossfuse config [--config FILE] [--set key=value ...]              # print the resolved config
    crossfuse config --reference                                        # every key (docs/config.md)
    crossfuse bench fusion --data PATH --seeds 3 --out results.json     # every method, tuned alike
    crossfuse bench encoders [--data PATH] [--device auto|cpu|cuda]     # encoder items per second
    crossfuse bench small-data --fractions 0.1,0.25,1 --seeds 3         # auto vs methods, less data
    crossfuse models [--model NAME]                                     # versions, aliases, decisions
    crossfuse promote --model NAME --version N [--reason TEXT]          # move champion by hand
    crossfuse submit --host URL [--namespace NS] [--config FILE]       # run on a KFP cluster

``--config`` defaults to ``configs/default.yaml`` when it exists in the working
directory. ``--data`` points the run at another dataset folder, named after the
folder unless ``--set data.name=...`` says otherwise.

Each command imports what it uses when it runs, so ``crossfuse config`` or ``--help`` does
not wait for torch and MLflow to load (there is no import cycle to dodge:
``tests/unit/test_architecture.py`` would fail on one).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from crossfuse.config import RunConfig, load_config
from crossfuse.errors import UserError
from crossfuse.preflight import require_store

DEFAULT_CONFIG = Path("configs/default.yaml")
DESCRIPTION = ("Multimodal data fusion for classification: validate, preprocess, extract, train, "
               "evaluate and register, tracked in MLflow.")
log = logging.getLogger("crossfuse")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    overrides = []
    if getattr(args, "data", None):
        overrides += [f"data.path={args.data}", "data.name=null"]
    return load_config(path, overrides + list(args.set or []))


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML run config (default: configs/default.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set fusion.method=late (repeatable)")


def cmd_bench_fusion(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from crossfuse.bench.fusion import bench_fusion, log_to_mlflow, markdown_table, prepare_features
    from crossfuse.features.store import read_feature_set

    cfg = config_from_args(args).resolved()
    with tempfile.TemporaryDirectory(prefix="crossfuse-bench-") as work:
        fs = read_feature_set(prepare_features(cfg, Path(work)))
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    rows = bench_fusion(fs, cfg, methods=methods, seeds=list(range(args.seeds)),
                        trials=args.trials, search_epochs=args.search_epochs,
                        baselines=not args.no_baselines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    table = markdown_table(rows)
    out.with_suffix(".md").write_text(table + "\n")
    log_to_mlflow(cfg, rows)
    print(table)
    print(f"\nwrote {out} and {out.with_suffix('.md')}; MLflow experiment "
          f"bench-{cfg.data.dataset_name()} at {cfg.mlflow.tracking_uri}")
    return 0


def cmd_bench_small_data(args: argparse.Namespace) -> int:
    import tempfile

    from crossfuse.bench.fusion import prepare_features
    from crossfuse.bench.small_data import bench_small_data, markdown_table, write_rows
    from crossfuse.features.store import read_feature_set

    cfg = config_from_args(args).resolved()
    finetune = [s.strip() for s in args.finetune.split(",")] if args.finetune else []
    work_dir = tempfile.TemporaryDirectory(prefix="crossfuse-bench-")
    work = Path(work_dir.name)
    fs = read_feature_set(prepare_features(cfg, work))
    rows, out = [], Path(args.out)

    def keep(row: dict) -> None:  # written as it goes: a long benchmark keeps what it finished
        rows.append(row)
        write_rows(rows, out)
        print(f"  {row['fraction']:.0%} seed {row['seed']} {row['model']:18s} "
              f"test macro-F1 {row['test_macro_f1']:.4f} ({row['seconds']:.1f} s)", flush=True)

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    try:  # fine-tuned rows read the preprocessed items: the work folder lives until the end
        bench_small_data(fs, cfg, [float(f) for f in args.fractions.split(",")],
                         list(range(args.seeds)), methods, on_row=keep, finetune=finetune,
                         preprocessed=work / "preprocessed")
    finally:
        work_dir.cleanup()
    print(markdown_table(rows))
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


def cmd_bench_encoders(args: argparse.Namespace) -> int:
    import json

    from crossfuse.bench.encoders import bench_encoders, markdown_table

    rows = bench_encoders(config_from_args(args).resolved(), device=args.device,
                          batch_size=args.batch_size, limit=args.limit, backend=args.backend)
    print(markdown_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def cmd_bench_extraction(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from crossfuse.bench.encoders import markdown_table
    from crossfuse.bench.perf import (
        default_setups,
        extraction_rates,
        file_layout_copy,
        preprocessed_copy,
    )
    from crossfuse.machine import machine

    cfg = config_from_args(args).resolved()
    setups = ([tuple(s.split(":")) for s in args.setups.split(",")] if args.setups
              else default_setups())
    modalities = args.modalities.split(",") if args.modalities else None
    extra = {}
    if setups[-1][0].startswith("cuda"):  # as extraction fed a GPU before: batches of 32
        extra = {"batch 32": ["extract.gpu_batch_size=32"]}
    with tempfile.TemporaryDirectory(prefix="crossfuse-bench-") as work:
        pre = preprocessed_copy(cfg, Path(work) / "pre")
        png = file_layout_copy(pre, Path(work) / "png")  # the same rows, one file per item
        rows = extraction_rates(cfg, pre, setups, modalities, extra,
                                {"from per-image PNGs": png})
    print(f"machine: {machine()}\n")
    print(markdown_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "layout": "mapped shards",
                                              "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def cmd_bench_scoring(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    import mlflow

    from crossfuse.batch.model import default_model_spec, fetch_model_dir, resolve_model
    from crossfuse.bench.scoring import measure_scoring
    from crossfuse.machine import machine

    cfg = config_from_args(args).resolved()
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    ref = resolve_model(args.model or default_model_spec(cfg), cfg.model_name())
    work = Path(tempfile.mkdtemp(prefix="crossfuse-bench-scoring-"))
    try:
        model = fetch_model_dir(ref, work / "model")
        print(f"machine: {machine()}\nmodel: {ref.describe()}, extract.shard_size "
              f"{cfg.extract.shard_size}, 2 parts\n")
        print("| rows | seconds | rows/s | peak RSS (MB) |\n|---:|---:|---:|---:|")
        for rows in (int(n) for n in args.sizes.split(",")):
            r = measure_scoring(model, rows, work, cfg.extract.shard_size)
            print(f"| {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} | {r['peak_rss_mb']} |",
                  flush=True)
            shutil.rmtree(work / f"rows-{rows}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def cmd_bench_perf(args: argparse.Namespace) -> int:
    import datetime
    import json

    from crossfuse.bench import perf
    from crossfuse.machine import machine

    work = perf.fresh(Path(args.work))
    log = work / "bench-perf.log"
    print(f"bench perf: outputs under {work}, command output in {log}", flush=True)
    ext_cfg = load_config(args.extraction_config, []).resolved()
    print("extraction rates ...", flush=True)
    pre = perf.preprocessed_copy(ext_cfg, work / "extraction-pre")
    png = perf.file_layout_copy(pre, work / "extraction-png")  # the same rows, one PNG each
    extraction = perf.extraction_rates(ext_cfg, pre, perf.default_setups(), None, None,
                                       {"from per-image PNGs": png})
    print("cold, warm and one-process runs ...", flush=True)
    costs = perf.run_costs(args.config, perf.fresh(work / "runs"), args.warm_change, log)
    sizes = [(int(n), "auto") for n in args.sizes.split(",") if n]
    sizes += [(int(n), args.fixed_method) for n in args.fixed_sizes.split(",") if n]
    print(f"scaling: {', '.join(f'{n:,} rows ({m})' for n, m in sizes) or 'none'} ...", flush=True)
    scaling = perf.scaling(sizes, work / "scaling", log)
    results = {"machine": machine(), "date": datetime.date.today().isoformat(),
               "command": "make bench-perf", "warm_change": args.warm_change,
               "extraction": extraction, "costs": costs, "scaling": scaling}
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    gpu = json.loads(Path(args.gpu).read_text()) if args.gpu and Path(args.gpu).is_file() else None
    perf.write_page(Path(args.out), perf.render(results, gpu))
    print(f"wrote {args.json} and {args.out}")
    return 0


def cmd_bench_stages(args: argparse.Namespace) -> int:
    import tempfile

    from crossfuse.stages import run_in_process

    with tempfile.TemporaryDirectory(prefix="crossfuse-stages-") as work:
        run_in_process(config_from_args(args).resolved(), Path(work))
    return 0


def _use_tracking(args: argparse.Namespace) -> None:
    import mlflow

    mlflow.set_tracking_uri(config_from_args(args).resolved().mlflow.tracking_uri)


def cmd_models(args: argparse.Namespace) -> int:
    uri = config_from_args(args).resolved().mlflow.tracking_uri
    require_store(uri)  # read-only: never create a store to list it
    from crossfuse.registry.register import list_versions

    _use_tracking(args)
    rows = list_versions(args.model)
    print(f"store: {uri}")
    if not rows:
        print(f"no registered model{' ' + args.model if args.model else 's'} yet; run `make run`")
        return 0
    print(f"{'model':24s} {'ver':>4s}  {'aliases':20s} {'decision':17s} {'by':10s} metrics / reason")
    for r in rows:
        print(f"{r['model']:24s} {r['version']:>4d}  {r['aliases']:20s} {r['decision']:17s} "
              f"{r['decided_by']:10s} {r['metrics']}")
        if r["reason"]:
            print(f"{'':62s}   {r['reason']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from crossfuse.registry.register import promote_by_hand

    require_store(config_from_args(args).resolved().mlflow.tracking_uri)
    _use_tracking(args)
    tags = promote_by_hand(args.model, args.version, reason=args.reason)
    before = tags["crossfuse.compared_to"] or "none"
    print(f"{args.model}: champion -> v{args.version} (was v{before}); "
          f"{tags['crossfuse.decided_by']}: {tags['crossfuse.reason']}")
    return 0


def cmd_runs_gc(args: argparse.Namespace) -> int:
    """End the RUNNING runs whose stages stopped stamping their heartbeat: KILLED."""
    from mlflow.tracking import MlflowClient

    from crossfuse.run_status import mark_killed, stale_runs

    cfg = config_from_args(args).resolved()
    require_store(cfg.mlflow.tracking_uri)
    _use_tracking(args)
    client = MlflowClient()
    if args.experiment:
        found = client.get_experiment_by_name(args.experiment)
        if found is None:
            raise UserError(f"no experiment {args.experiment!r} in {cfg.mlflow.tracking_uri}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    stale_seconds = args.stale_minutes * 60
    stale = stale_runs(client, [e.experiment_id for e in experiments], stale_seconds)
    for run in stale:
        if not args.dry_run:
            mark_killed(client, run, stale_seconds)
        print(f"{'would mark' if args.dry_run else 'marked'} KILLED: run {run.info.run_id} "
              f"({run.info.run_name}), no heartbeat for over {args.stale_minutes:g} min")
    print(f"{len(stale)} stale RUNNING run{'s' if len(stale) != 1 else ''} in "
          f"{len(experiments)} experiment{'s' if len(experiments) != 1 else ''} "
          f"({cfg.mlflow.tracking_uri})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from crossfuse.data.dvc import fetch_dvc_data

    options = {}
    for option in args.remote_option or []:
        key, sep, value = option.partition("=")
        if not sep:
            raise UserError(f"--remote-option {option!r} is not KEY=VALUE "
                            f"(e.g. endpointurl=http://minio:9000)")
        options[key] = value
    dvc_file = Path(args.dvc_file)
    if not dvc_file.is_file():
        raise UserError(f"--dvc-file {dvc_file} does not exist; pass the .dvc file that pins the "
                        f"data (data.dvc in a clone of the project)")
    out = fetch_dvc_data(dvc_file.read_text(), args.remote, Path(args.out), options)
    print(f"fetched {args.dvc_file}'s data version from {args.remote} to {out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from crossfuse.data.sample import generate_sample_dataset

    ds = generate_sample_dataset(Path(args.out), per_class=args.per_class, seed=args.seed,
                                 audio=args.audio)
    print(f"wrote {ds.n_samples} samples ({len(ds.labels)} classes) to {ds.root}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    if args.reference:
        from crossfuse.config_reference import config_reference

        print(config_reference(), end="")
        return 0
    print(yaml.safe_dump(config_from_args(args).model_dump(), sort_keys=False), end="")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, with a "did you mean" for a mistyped choice and no usage block on an error."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(2))
            close = difflib.get_close_matches(wrong.group(1), choices, n=1, cutoff=0.5)
            message = (f"{wrong.group(1)!r} is not a {self.prog} command"
                       f"{f'; did you mean {close[0]!r}?' if close else ''} (choose from "
                       f"{', '.join(choices)})")
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def new_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The bare ``crossfuse`` parser and its sub-command action, for commands to be added to."""
    parser = Parser(prog="crossfuse", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"crossfuse {_version()}")
    return parser, parser.add_subparsers(dest="command", required=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crossfuse")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_library_commands(sub: argparse._SubParsersAction) -> None:
    """``data``, ``bench``, ``models``, ``promote``, ``runs`` and ``config``: the commands that need
    no KFP."""
    data = sub.add_parser("data", help="dataset helpers")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="write the deterministic sample dataset")
    gen.add_argument("--out", default="data")
    gen.add_argument("--per-class", type=int, default=120)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--audio", action="store_true",
                     help="also write an audio column: a tone whose pitch says the time of day")
    gen.set_defaults(func=cmd_generate)
    fetch = data_sub.add_parser("fetch", help="pull the data version a .dvc file pins from a "
                                              "DVC remote (no git checkout needed)")
    fetch.add_argument("--dvc-file", default="data.dvc")
    fetch.add_argument("--remote", required=True, help="DVC remote URL, e.g. s3://bucket/path")
    fetch.add_argument("--out", required=True, help="new folder for the data")
    fetch.add_argument("--remote-option", action="append", metavar="KEY=VALUE",
                       help="DVC remote setting, e.g. endpointurl=http://minio:9000 (repeatable)")
    fetch.set_defaults(func=cmd_fetch)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    fusion = bench_sub.add_parser("fusion", help="every fusion method + unimodal baselines, "
                                                 "tuned the same way, over several seeds")
    fusion.add_argument("--data", help="dataset folder (default: config's data.path)")
    fusion.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    fusion.add_argument("--trials", type=int, default=8, help="Optuna trials per method (0: none)")
    fusion.add_argument("--search-epochs", type=int, default=40, help="epoch budget per trial")
    fusion.add_argument("--methods", help="comma-separated subset (default: all)")
    fusion.add_argument("--no-baselines", action="store_true", help="skip unimodal baselines")
    fusion.add_argument("--out", default="results.json", help="JSON out; a .md table goes beside")
    add_config_args(fusion)
    fusion.set_defaults(func=cmd_bench_fusion)
    small = bench_sub.add_parser("small-data", help="auto vs every fixed method vs each modality "
                                                    "alone, on shrinking train+val subsets")
    small.add_argument("--data", help="dataset folder (default: config's data.path)")
    small.add_argument("--fractions", default="0.1,0.25,1", help="train+val fractions kept")
    small.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (subsample and training)")
    small.add_argument("--methods", help="comma-separated fixed methods (default: all)")
    small.add_argument("--out", default="small_data.json", help="JSON out; a .md table goes beside")
    small.add_argument("--finetune", help="also the linear head with the encoders fine-tuned "
                                          "each way, e.g. top:1,lora:8 (fusion.finetune values), "
                                          "beside the frozen linear head")
    add_config_args(small)
    small.set_defaults(func=cmd_bench_small_data)
    enc = bench_sub.add_parser("encoders", help="items per second of the run's encoders")
    enc.add_argument("--data", help="dataset folder (default: config's data.path)")
    enc.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:N")
    enc.add_argument("--batch-size", type=int, help="default: extract.batch_size")
    enc.add_argument("--backend", choices=["auto", "torch", "onnxruntime"],
                     help="default: extract.backend")
    enc.add_argument("--limit", type=int, default=512, help="items per modality (default 512)")
    enc.add_argument("--out", help="also write the rows as JSON here")
    add_config_args(enc)
    enc.set_defaults(func=cmd_bench_encoders)
    ext = bench_sub.add_parser("extraction", help="items per second of the extract stage end to "
                                                  "end, per device and backend")
    ext.add_argument("--data", help="dataset folder (default: config's data.path)")
    ext.add_argument("--setups", help="device:backend,... (default: cpu:torch,cpu:onnxruntime "
                                      "and cuda:torch when there is a GPU)")
    ext.add_argument("--modalities", help="comma-separated (default: the config's)")
    ext.add_argument("--out", help="also write the rows as JSON here")
    add_config_args(ext)
    ext.set_defaults(func=cmd_bench_extraction)
    perf_p = bench_sub.add_parser("perf", help="extraction rates, cold/warm/one-process stage "
                                               "costs and scaling -> docs/performance.md")
    perf_p.add_argument("--config", type=Path, help="run config of the cold/warm runs "
                                                    "(default: the built-in defaults on data/)")
    perf_p.add_argument("--extraction-config", type=Path,
                        default=Path("configs/openmoji_unicode14.yaml"),
                        help="dataset of the extraction rates")
    perf_p.add_argument("--warm-change", default="fusion.method=concat",
                        help="the one setting the warm run changes")
    perf_p.add_argument("--sizes", default="1000,6000,30000",
                        help="scaling sizes in rows, with the default fusion.method=auto")
    perf_p.add_argument("--fixed-sizes", default="100000",
                        help="scaling sizes in rows with one fixed method (--fixed-method)")
    perf_p.add_argument("--fixed-method", default="late", help="the fixed method's name")
    perf_p.add_argument("--work", default="/tmp/crossfuse-bench-perf", help="scratch folder")
    perf_p.add_argument("--gpu", default="docs/results/perf_gpu_extraction.json",
                        help="GPU rows measured elsewhere (crossfuse bench extraction --out)")
    perf_p.add_argument("--json", default="docs/results/perf.json")
    perf_p.add_argument("--out", default="docs/performance.md")
    perf_p.set_defaults(func=cmd_bench_perf)
    scoring = bench_sub.add_parser("scoring", help="batch scoring's time and peak memory at "
                                                   "growing row counts (synthetic features)")
    scoring.add_argument("--model", help="NAME@ALIAS or NAME/VERSION (default: the config's "
                                         "model @champion)")
    scoring.add_argument("--sizes", default="5000,40000,160000", help="rows, comma-separated")
    add_config_args(scoring)
    scoring.set_defaults(func=cmd_bench_scoring)
    stages = bench_sub.add_parser("stages", help="every stage in one process (no KFP): the "
                                                 "reference for the local runner's overhead")
    stages.add_argument("--data", help="dataset folder (default: config's data.path)")
    add_config_args(stages)
    stages.set_defaults(func=cmd_bench_stages)

    models = sub.add_parser("models", help="list registered versions, aliases and decisions")
    models.add_argument("--model", help="one registered model (default: all)")
    add_config_args(models)
    models.set_defaults(func=cmd_models)

    promote = sub.add_parser("promote", help="make a version the champion by hand (audited)")
    promote.add_argument("--model", required=True, help="registered model name")
    promote.add_argument("--version", required=True, help="version to make champion")
    promote.add_argument("--reason", help="why; stored on the version and its run")
    add_config_args(promote)
    promote.set_defaults(func=cmd_promote)

    runs = sub.add_parser("runs", help="pipeline runs in the tracking store")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    gc = runs_sub.add_parser("gc", help="mark RUNNING runs whose tasks stopped their heartbeat "
                                        "(a killed pod) KILLED")
    gc.add_argument("--stale-minutes", type=float, default=15.0,
                    help="no heartbeat for this long means killed (default 15; above the "
                         "longest wait for a pod between two stages)")
    gc.add_argument("--experiment", help="one experiment (default: all)")
    gc.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    add_config_args(gc)
    gc.set_defaults(func=cmd_runs_gc)

    show = sub.add_parser("config", help="print the resolved run config")
    show.add_argument("--data")
    show.add_argument("--reference", action="store_true",
                      help="print every key with its type, default and meaning (docs/config.md)")
    add_config_args(show)
    show.set_defaults(func=cmd_config)


def build_parser() -> argparse.ArgumentParser:
    """The library's commands alone (``pipelines.cli`` adds run, compile and submit)."""
    parser, sub = new_parser()
    add_library_commands(sub)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Parse ``argv`` with ``parser`` (default: the library's commands), run the command.

    A :class:`~crossfuse.errors.UserError` (bad data, settings, paths, a missing model or
    store) prints its message alone and exits 2; anything else is a bug: its traceback, a
    line saying so, exit 1.
    """
    args = (parser or build_parser()).parse_args(argv)
    quiet = getattr(args, "verbose", None) is False  # `run` without -v: results only
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"crossfuse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crossfuse: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"crossfuse: this is a bug in crossfuse {_version()}, not a problem with your data "
              f"or settings: please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
