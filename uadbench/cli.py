"""The ``uadbench`` command.

    uadbench run leaderboard/quickstart.toml      train and evaluate a grid, print the leaderboard
    uadbench list methods '*ddpm*'                what is registered (methods, datasets, shifts, metrics)
    uadbench report runs/quickstart/results.jsonl render a leaderboard from result records
    uadbench compare results.jsonl cddpm ae       paired permutation test on per-subject values
    uadbench phantom --out DIR [--preview]        write the phantom cohorts as NIfTI for a viewer
    uadbench ui --run-dir runs/quickstart         serve the MLflow store on 127.0.0.1

User errors print one line (``uadbench: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from uadbench.errors import UadbenchError


def _cmd_run(args: argparse.Namespace) -> int:
    from uadbench.runner import run_grid

    summary = run_grid(
        args.grid,
        out_dir=args.out,
        cache_dir=args.cache,
        data_root=args.data_root,
        tracking_uri=args.tracking_uri,
        track=not args.no_tracking,
        workers=args.workers,
        threads_per_worker=args.threads,
        device=args.device,
    )
    print()
    print(summary.table)
    print()
    print(f"results:     {summary.results_path}")
    print(f"leaderboard: {summary.leaderboard_path}")
    if summary.tracking_uri:
        print(f"mlflow:      {summary.tracking_uri} (experiment {summary.experiment!r}; `uadbench ui --run-dir {summary.run_dir}`)")
    print(f"wall time:   {summary.seconds:.1f} s")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from uadbench.registry import REGISTRIES

    registry = REGISTRIES[args.kind]
    if args.cards:  # dataset cards: register them before listing
        from uadbench.data.cards import register_cards

        register_cards(args.cards)
    names = registry.names(args.pattern)
    for problem in registry.load_errors():  # a broken plugin is one line; the others still list
        print(f"uadbench: warning: {problem}", file=sys.stderr)
    if not names:
        print(f"no {args.kind} match {args.pattern!r}; registered: {', '.join(registry.names()) or '(none)'}", file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name.ljust(width)}  {registry.describe(name)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from uadbench import report
    from uadbench.records import read_records

    records = read_records(args.results)
    render = {
        "md": report.leaderboard_markdown,
        "text": report.leaderboard_terminal,
        "csv": report.leaderboard_csv,
        "latex": report.leaderboard_latex,
    }[args.format]
    print(render(records), end="" if args.format == "csv" else "\n")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from uadbench.evaluation.stats import compare_per_subject
    from uadbench.records import read_records

    records = read_records(args.results)
    labels = sorted({r.label for r in records})
    for label in (args.a, args.b):
        if label not in labels:
            raise UadbenchError(f"no method {label!r} in {args.results}; methods there: {', '.join(labels)}")
    cells: dict[tuple, dict] = {}
    for r in records:
        if (args.dataset and r.dataset != args.dataset) or (args.shift and r.shift_label != args.shift):
            continue
        cells.setdefault(r.cell, {})[r.label] = r
    print(f"paired permutation test ({args.rounds} rounds), {args.metric}: {args.a} vs {args.b}")
    found = 0
    for (dataset, shift, seed), by_label in cells.items():
        if args.a not in by_label or args.b not in by_label:
            continue
        res = compare_per_subject(by_label[args.a].per_volume, by_label[args.b].per_volume, args.metric, rounds=args.rounds)
        found += 1
        print(
            f"{dataset}  shift {shift}  seed {seed}: n={int(res['n'])}  {args.a} {res['mean_a']:.4f}  "
            f"{args.b} {res['mean_b']:.4f}  diff {res['mean_diff']:+.4f}  p={res['p_value']:.4g}"
        )
    if not found:
        raise UadbenchError("no evaluation cell has both methods for the chosen dataset and shift")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    try:
        from uadbench.data import phantom
    except ImportError as exc:  # pragma: no cover - phantom is part of the distribution
        raise UadbenchError(f"the phantom generator is not available: {exc}") from exc
    if args.preview:
        out = Path(args.preview)
        phantom.render_preview(out, seed=args.seed)
        print(f"preview: {out}")
    if args.out:
        path = phantom.write_cohorts(Path(args.out), seed=args.seed)
        print(f"phantom cohorts: {path}")
    if not args.out and not args.preview:
        raise UadbenchError("uadbench phantom needs --out DIR and/or --preview FILE.png")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    if args.tracking_uri:
        uri = args.tracking_uri
    else:
        db = Path(args.run_dir) / "mlflow.db"
        if not db.is_file():
            raise UadbenchError(f"no MLflow store at {db}; pass --run-dir of a finished run or --tracking-uri")
        uri = f"sqlite:///{db.resolve()}"
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port), "--workers", "1"]
    print(f"serving {uri} on http://{args.host}:{args.port}", flush=True)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    return subprocess.call(cmd, env=env)


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
    r.add_argument("--workers", type=int, default=1, help="worker processes (each uses --threads torch threads)")
    r.add_argument("--threads", type=int, default=1, help="torch threads per worker process (default 1)")
    r.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override the grid's device")
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list registered methods, datasets, shifts or metrics")
    ls.add_argument("kind", choices=["methods", "datasets", "shifts", "metrics"])
    ls.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. '*ddpm*'")
    ls.add_argument("--cards", action="append", metavar="DIR", help="also register the dataset cards (*.toml) in DIR (repeatable)")
    ls.set_defaults(func=_cmd_list)

    rep = sub.add_parser("report", help="render a leaderboard from a results.jsonl")
    rep.add_argument("results")
    rep.add_argument("--format", choices=["md", "text", "csv", "latex"], default="md")
    rep.set_defaults(func=_cmd_report)

    cmp_ = sub.add_parser("compare", help="paired permutation test between two methods of a results.jsonl")
    cmp_.add_argument("results")
    cmp_.add_argument("a", help="method label")
    cmp_.add_argument("b", help="method label")
    cmp_.add_argument("--metric", default="auprc", help="per-volume metric (default auprc)")
    cmp_.add_argument("--dataset", help="only this dataset")
    cmp_.add_argument("--shift", help="only this shift, e.g. none or gamma@1.5")
    cmp_.add_argument("--rounds", type=int, default=10_000)
    cmp_.set_defaults(func=_cmd_compare)

    ph = sub.add_parser("phantom", help="write phantom cohorts as NIfTI and/or a preview PNG")
    ph.add_argument("--out", help="directory to write the cohorts to")
    ph.add_argument("--preview", nargs="?", const="phantom-preview.png", help="write a preview PNG (default name phantom-preview.png)")
    ph.add_argument("--seed", type=int, default=0)
    ph.set_defaults(func=_cmd_phantom)

    ui = sub.add_parser("ui", help="serve an MLflow store on 127.0.0.1")
    ui.add_argument("--run-dir", default="runs/quickstart")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UadbenchError as exc:
        print(f"uadbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uadbench: interrupted; finished cells are cached, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
