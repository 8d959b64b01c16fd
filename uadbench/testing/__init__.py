"""The plugin contract as checks a plugin author runs: :func:`check_method`, :func:`check_dataset`,
:func:`check_shift` and :func:`check_metric` (scikit-learn's ``check_estimator`` is the model)::

    from uadbench.testing import check_method
    check_method("mymethod")          # a registered name, or the Method subclass itself

The project's own contract tests call exactly these functions for every registered plugin. Each
runs on small synthetic data, returns None when the plugin meets the contract and raises
:class:`AssertionError` naming the plugin and what is wrong otherwise. Nothing here needs pytest.

- :func:`check_method`: presets ``paper``, ``cpu`` and ``smoke`` exist and build; ``fit`` and
  ``predict`` never read a lesion mask (a spy on ``Volume.lesion_mask`` while they run, with
  lesion-bearing volumes in the calling frame, as in the runner); maps and reconstructions have
  the input's shape and are finite; the same seed gives the same maps, also after a fit with
  another seed; ``predict`` draws from its ``generator`` only; ``state_dict`` survives a
  ``weights_only`` save and load into a fresh instance.
- :func:`check_dataset`: splits distinct, non-empty and disjoint by subject, loaded in a stable
  order; an unknown split refused; lesion masks on exactly the lesion splits; Volume fields of
  agreeing shapes and types with a non-empty brain; the fingerprint and content the same from a
  fresh instance.
- :func:`check_shift`: a declared neutral severity inside the declared range, identity there;
  deterministic in its ``rng``; inputs (image and mask) never written; float32 output of the
  input's shape, finite, zero outside the brain; a change away from neutral; severities outside
  the declared range refused. Acquisition shifts: the same, on a dataset that re-acquires.
- :func:`check_metric`: the catalogue entry (name, description, direction, upper-bound flag,
  unit); given a ``compute`` function, its values are finite, inside the declared range, equal to
  a reference definition, and ordered as the declared direction says (a perfect map against an
  inverted one).
"""

from __future__ import annotations

from uadbench.testing.base import brainlike_volumes
from uadbench.testing.datasets import check_dataset
from uadbench.testing.methods import PRESETS, check_method
from uadbench.testing.metrics import check_metric
from uadbench.testing.shifts import SHIFT_OFFSETS, check_shift

__all__ = ["PRESETS", "SHIFT_OFFSETS", "brainlike_volumes", "check_dataset", "check_method", "check_metric", "check_shift"]
