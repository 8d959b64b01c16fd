from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One phantom data root for the whole test session (generated once)."""
    root = tmp_path_factory.mktemp("uadbench-data")
    old = os.environ.get("UADBENCH_DATA")
    os.environ["UADBENCH_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("UADBENCH_DATA", None)
    else:
        os.environ["UADBENCH_DATA"] = old
