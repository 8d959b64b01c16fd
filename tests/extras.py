"""Markers for tests that need an optional extra: they skip with the install line where it is missing
(README command 2's environment), and conftest marks them ``extras`` so .ci/run reruns them after
installing the extras."""

from __future__ import annotations

import importlib.util

import pytest

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is an optional extra: pip install 'uadbench[slurm]'")
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is an optional extra: pip install 'uadbench[ray]'")
