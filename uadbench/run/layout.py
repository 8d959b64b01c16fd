"""Where a run keeps everything: the one module that names cache folders and files.

A run directory holds what a user reads; its cache (``<run dir>/cache`` unless ``--cache`` names
another, which several runs may share) holds what is recomputed from keys
(:mod:`uadbench.grid.jobs`). Every entry is written atomically (:mod:`uadbench.files`); a fit's
``model.pt`` and ``meta.json``, a map's ``.npz``, a cell's ``.json`` and a training checkpoint also
carry the sha256 of their bytes in ``<name>.sha256`` beside them, checked on read (a corrupt entry
is moved aside as ``<name>.corrupt`` and recomputed)::

    <run dir>/results.jsonl                    one ResultRecord per cell
    <run dir>/leaderboard.md                   the leaderboard
    <run dir>/mlflow.db, mlartifacts/          the default MLflow store
    <run dir>/slurm/                           submitit's job files
    <cache>/data/<dataset>-<split>-<key>.volumes/   a prepared split on the grid (a store:
                                               uadbench.data.store; earlier versions wrote .npz)
    <cache>/data/<dataset>-<split>-<shift>-<key>.volumes/   the split re-acquired under an acquisition shift
    <cache>/fits/<key>/                        model.pt (loaded with weights_only=True) + meta.json
    <cache>/work/<key>/                        a running fit's checkpoints
    <cache>/live/<key>.jsonl                   a running fit's live log
    <cache>/maps/<key>.npz                     anomaly maps of one split under one shift
    <cache>/evals/<key>.json                   one evaluation cell's result record
    <cache>/evals/<key>-example/               its example volume (NIfTI) and panel

What the harness derives from a dataset's files (split CSVs, checksums) lives in the user's cache
(``$XDG_CACHE_HOME/uadbench``, else ``~/.cache/uadbench``), never beside the scans of a data folder
it may not own::

    <user cache>/cards/<card>-<key>/           a dataset card's split CSVs and checksums.json; the key
                                               hashes the card's text and the folder it reads
    <user cache>/sidecars/<hash of folder>/    the same for a read-only data folder of a built-in dataset
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = "results.jsonl"
LEADERBOARD = "leaderboard.md"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
MODEL = "model.pt"
META = "meta.json"
PANEL = "panel"  # the example panel's stem (panel.png)
PSEUDONYM_KEY = "pseudonym.key"  # the run's key of subject pseudonyms (uadbench.records.Pseudonyms), mode 0600


def default_cache(run_dir: Path) -> Path:
    return Path(run_dir) / "cache"


def results_path(run_dir: Path) -> Path:
    return Path(run_dir) / RESULTS


def leaderboard_path(run_dir: Path) -> Path:
    return Path(run_dir) / LEADERBOARD


def mlflow_db(run_dir: Path) -> Path:
    return Path(run_dir) / MLFLOW_DB


def mlflow_artifacts(run_dir: Path) -> Path:
    return Path(run_dir) / MLFLOW_ARTIFACTS


def pseudonym_key_path(run_dir: Path) -> Path:
    return Path(run_dir) / PSEUDONYM_KEY


def slurm_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "slurm"


SPLIT_STORE = ".volumes"  # a prepared split's folder (uadbench.data.store)
OLD_SPLIT = ".npz"  # the file earlier versions wrote under the same key: migrated, never read as a store


def split_path(cache: Path, dataset: str, split: str, key: str, suffix: str = SPLIT_STORE) -> Path:
    return Path(cache) / "data" / f"{dataset}-{split}-{key}{suffix}"


def acquired_split_path(cache: Path, dataset: str, split: str, shift: str, key: str, suffix: str = SPLIT_STORE) -> Path:
    return Path(cache) / "data" / f"{dataset}-{split}-{shift}-{key}{suffix}"


def fit_dir(cache: Path, fit_key: str) -> Path:
    return Path(cache) / "fits" / fit_key


def fits_root(cache: Path) -> Path:
    return Path(cache) / "fits"


def model_path(cache: Path, fit_key: str) -> Path:
    return fit_dir(cache, fit_key) / MODEL


def meta_path(cache: Path, fit_key: str) -> Path:
    return fit_dir(cache, fit_key) / META


def work_dir(cache: Path, fit_key: str) -> Path:
    return Path(cache) / "work" / fit_key


def live_path(cache: Path, fit_key: str) -> Path:
    return Path(cache) / "live" / f"{fit_key}.jsonl"


def maps_dir(cache: Path) -> Path:
    return Path(cache) / "maps"


def eval_path(cache: Path, eval_key: str) -> Path:
    return Path(cache) / "evals" / f"{eval_key}.json"


def example_dir(cache: Path, eval_key: str) -> Path:
    return Path(cache) / "evals" / f"{eval_key}-example"


def map_path(cache: Path, map_key: str) -> Path:
    return maps_dir(cache) / f"{map_key}.npz"


def user_cache() -> Path:
    """``$XDG_CACHE_HOME/uadbench``, else ``~/.cache/uadbench``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uadbench"


def sidecar_cache(folder_digest: str) -> Path:
    return user_cache() / "sidecars" / folder_digest


def card_cache(card_name: str, key: str) -> Path:
    return user_cache() / "cards" / f"{card_name}-{key}"
