"""MR physics of the phantom: tissue relaxation parameters, pulse sequences and scanners.

Each tissue has T1, T2 and PD; a sequence turns them into signal. Spin echo,
``PD (1 - exp(-TR/T1)) exp(-TE/T2)``, gives T1w, T2w and PD-weighted images; inversion
recovery, ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``, gives FLAIR (TI chosen to
null CSF). A voxel's signal is the fraction-weighted sum of its tissues' signals. A
:class:`Scanner` is a named set of sequence parameters, a field strength, a noise level and a
bias-field strength; the image is ``gain * |bias * signal + complex Gaussian noise|``
(Rician magnitude noise), skull-stripped (zero outside the brain mask); see
:func:`uadbench.data.phantom.synthesis.render`.

Relaxation parameters (ms; PD relative to pure water), rounded from the literature:

    ============  ======  ======  =====  ======  ======  =====
    tissue        T1 1.5  T2 1.5  PD     T1 3T   T2 3T   PD
    ============  ======  ======  =====  ======  ======  =====
    white matter   790     80     0.70   1080     70     0.70
    grey matter   1200     95     0.80   1600    100     0.80
    CSF           4300   2000     1.00   4300   1800     1.00
    ============  ======  ======  =====  ======  ======  =====

    - T1 and T2 of grey and white matter: Stanisz et al., "T1, T2 relaxation and magnetization
      transfer in tissue at 3T", Magn Reson Med 54:507-512 (2005) (WM 1084/69 ms, GM 1820/99 ms
      at 3 T; 884/72 and 1124/95 ms at 1.5 T); Rooney et al., "Magnetic field and tissue
      dependencies of human brain longitudinal 1H2O relaxation in vivo", Magn Reson Med
      57:308-318 (2007) (T1 of CSF about 4.3 s, nearly field independent; cortical GM and WM
      T1 rising with field). Our GM values sit between the two studies.
    - T2 of CSF: about 2 s at 1.5 T and somewhat shorter at 3 T (e.g. Spijkerman et al.,
      "T2 mapping of cerebrospinal fluid: 3 T versus 7 T", MAGMA 31:415-424, 2018).
    - Proton density (water content): WM about 0.69-0.71, GM about 0.80-0.83 (Neeb et al.,
      "A new method for fast quantitative mapping of absolute water content in vivo",
      NeuroImage 31:1156-1168, 2006; Tofts, "Quantitative MRI of the Brain", Wiley 2003).
    - Lesion tissues (:mod:`uadbench.data.phantom.lesions`) are set from the same sources'
      qualitative descriptions (oedema and necrosis: long T1 and T2, high water content) and
      then calibrated so that the lesion-to-surrounding-brain ratio measured by
      :func:`uadbench.data.phantom.calibration.lesion_contrast_ratio` falls in the ranges of
      real scans (BraTS whole tumour 1.2-2.3x on FLAIR and 1.1-2.1x on T2; MS lesions 1.3-1.6x
      on FLAIR and T2 and slightly darker than the surrounding brain on T1: 0.79-0.88x on the
      three MSLUB scans of ``../shared/realdata`` measured with the same function, see
      :func:`uadbench.data.phantom.calibration.mslub_lesion_ratios`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from uadbench.errors import ConfigError

MODALITIES: tuple[str, ...] = ("t1w", "t2w", "flair")
ALL_MODALITIES: tuple[str, ...] = ("t1w", "t2w", "pd", "flair")
DEFAULT_SCANNER = "generic-3t"


@dataclass(frozen=True)
class TissueParams:
    """Longitudinal and transverse relaxation times (ms) and proton density (water = 1)."""

    t1: float
    t2: float
    pd: float


# Healthy tissues per field strength (see the module docstring for sources).
HEALTHY_TISSUES: dict[float, dict[str, TissueParams]] = {
    1.5: {
        "wm": TissueParams(790.0, 80.0, 0.70),
        "gm": TissueParams(1200.0, 95.0, 0.80),
        "csf": TissueParams(4300.0, 2000.0, 1.00),
    },
    3.0: {
        "wm": TissueParams(1080.0, 70.0, 0.70),
        "gm": TissueParams(1600.0, 100.0, 0.80),
        "csf": TissueParams(4300.0, 1800.0, 1.00),
    },
}


@dataclass(frozen=True)
class PulseSequence:
    """A pulse sequence: spin echo (``kind="se"``) or inversion recovery (``kind="ir"``).

    Times in ms. Spin echo: ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``. Inversion recovery (magnitude):
    ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``.
    """

    kind: str
    tr: float
    te: float
    ti: float | None = None

    def signal(self, t1, t2, pd):
        t1 = np.asarray(t1, dtype=np.float64)
        t2 = np.asarray(t2, dtype=np.float64)
        pd = np.asarray(pd, dtype=np.float64)
        decay = np.exp(-self.te / t2)
        if self.kind == "se":
            return pd * (1.0 - np.exp(-self.tr / t1)) * decay
        if self.kind == "ir":
            assert self.ti is not None
            return pd * np.abs(1.0 - 2.0 * np.exp(-self.ti / t1) + np.exp(-self.tr / t1)) * decay
        raise ConfigError(f"unknown sequence kind {self.kind!r}; valid: 'se', 'ir'")


@dataclass(frozen=True)
class Scanner:
    """A named acquisition protocol: sequences per modality, field strength and imperfections.

    ``noise`` is the standard deviation of each quadrature channel of the complex noise, as a
    fraction of the mean noise-free brain signal of the sequence; ``bias`` is the standard
    deviation of the log of the multiplicative bias field; ``gain`` scales the output.
    """

    name: str
    field_strength: float
    sequences: Mapping[str, PulseSequence]
    noise: float = 0.03
    bias: float = 0.10
    gain: float = 1000.0

    def sequence(self, modality: str) -> PulseSequence:
        if modality not in self.sequences:
            raise ConfigError(
                f"scanner {self.name!r} has no sequence for modality {modality!r}; "
                f"available: {', '.join(self.sequences)}"
            )
        return self.sequences[modality]


SCANNERS: dict[str, Scanner] = {
    "generic-3t": Scanner(
        "generic-3t",
        3.0,
        {
            "t1w": PulseSequence("se", tr=500.0, te=10.0),
            "t2w": PulseSequence("se", tr=4000.0, te=100.0),
            "pd": PulseSequence("se", tr=4000.0, te=12.0),
            "flair": PulseSequence("ir", tr=9000.0, te=120.0, ti=2480.0),
        },
        noise=0.03,
        bias=0.10,
    ),
    "generic-1.5t": Scanner(
        "generic-1.5t",
        1.5,
        {
            "t1w": PulseSequence("se", tr=450.0, te=12.0),
            "t2w": PulseSequence("se", tr=3500.0, te=90.0),
            "pd": PulseSequence("se", tr=3500.0, te=12.0),
            "flair": PulseSequence("ir", tr=8000.0, te=110.0, ti=2360.0),
        },
        noise=0.04,
        bias=0.15,
    ),
}


def get_scanner(scanner: str | Scanner) -> Scanner:
    if isinstance(scanner, Scanner):
        return scanner
    if scanner not in SCANNERS:
        raise ConfigError(f"unknown phantom scanner {scanner!r}; available: {', '.join(SCANNERS)}")
    return SCANNERS[scanner]

