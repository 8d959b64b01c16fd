"""A digital brain phantom: healthy subjects and lesion cohorts rendered from MR physics.

The modules, bottom to top (each imports only the ones above it in this list):

- :mod:`.physics`: tissue relaxation parameters (with their literature sources), pulse
  sequences and their signal equations, named scanners.
- :mod:`.anatomy`: the MNI152 template's tissue fractions at 2 mm (from nilearn).
- :mod:`.subject`: cohorts and subject ids, per-subject random streams, smooth random fields,
  the per-subject warp and tissue jitter, the :class:`PhantomSubject` record.
- :mod:`.lesions`: tumours, multiple-sclerosis lesions and strokes (planning and insertion).
- :mod:`.synthesis`: :func:`generate_subject` (anatomy, warp and lesions together) and
  :func:`render` (signal, bias field, Rician noise); not named ``render`` so that the module
  does not collide with the function of that name re-exported here.
- :mod:`.cohorts`: split sizes, the versioned layout under the data root
  (``<root>/phantom/v<PHANTOM_VERSION>/seed<seed>/``), generating cohorts on disk once.
- :mod:`.preview`: a PNG of one subject per cohort in every modality.
- :mod:`.calibration`: lesion-to-surrounding-brain contrast ratios of the phantom and of real
  scans, and the ranges the lesion tissues are calibrated to.

This package re-exports the names the datasets, the command line and the tests use.
"""

from uadbench.data.phantom.anatomy import SPACING_MM
from uadbench.data.phantom.calibration import (
    CALIBRATION_TARGETS,
    lesion_contrast_ratio,
    mslub_lesion_ratios,
    phantom_lesion_ratios,
)
from uadbench.data.phantom.cohorts import (
    PHANTOM_VERSION,
    SIZES_ENV,
    cohort_dir_name,
    ensure_cohort,
    phantom_root,
    resolve_sizes,
    verify_manifest,
    write_cohorts,
)
from uadbench.data.phantom.lesions import LESION_TYPES
from uadbench.data.phantom.physics import (
    ALL_MODALITIES,
    DEFAULT_SCANNER,
    HEALTHY_TISSUES,
    MODALITIES,
    SCANNERS,
    PulseSequence,
    Scanner,
    TissueParams,
    get_scanner,
)
from uadbench.data.phantom.preview import render_preview
from uadbench.data.phantom.subject import (
    COHORT_DETAILS,
    COHORTS,
    CohortSpec,
    PhantomSubject,
    get_cohort,
    subject_id,
)
from uadbench.data.phantom.synthesis import generate_subject, render, tissue_signals, to_volume

__all__ = [
    "ALL_MODALITIES",
    "CALIBRATION_TARGETS",
    "COHORTS",
    "COHORT_DETAILS",
    "CohortSpec",
    "DEFAULT_SCANNER",
    "HEALTHY_TISSUES",
    "LESION_TYPES",
    "MODALITIES",
    "PHANTOM_VERSION",
    "PhantomSubject",
    "PulseSequence",
    "SCANNERS",
    "SIZES_ENV",
    "SPACING_MM",
    "Scanner",
    "TissueParams",
    "cohort_dir_name",
    "ensure_cohort",
    "generate_subject",
    "get_cohort",
    "get_scanner",
    "lesion_contrast_ratio",
    "mslub_lesion_ratios",
    "phantom_lesion_ratios",
    "phantom_root",
    "render",
    "render_preview",
    "resolve_sizes",
    "subject_id",
    "tissue_signals",
    "to_volume",
    "verify_manifest",
    "write_cohorts",
]
