from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One phantom data root for the whole test session (generated once)."""
    root = tmp_path_factory.mktemp("uadbench-data")
    saved = {k: os.environ.get(k) for k in ("UADBENCH_DATA", "UADBENCH_PHANTOM_SIZES")}
    os.environ["UADBENCH_DATA"] = str(root)
    # small cohorts keep the end-to-end tests fast; the phantom's own tests check the defaults
    os.environ["UADBENCH_PHANTOM_SIZES"] = "train=6,val=3,test=4"
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(config, items):
    """Tests that skip without an optional extra (their skip reason names ``uadbench[...]``) are also
    marked ``extras``: .ci/run reruns them with ``pytest -m extras`` once it has installed the extras."""
    for item in items:
        if any("uadbench[" in str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.extras)
