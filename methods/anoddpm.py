"""AnoDDPM: partial diffusion of the input, then the reverse chain back to 0; anomaly map ``|x - x_hat|``.

Paper: Wyatt, Leach, Schmon, Willcocks, "AnoDDPM: Anomaly Detection with Denoising Diffusion
Probabilistic Models using Simplex Noise" (CVPR Workshops (NTIRE) 2022, pp. 650-656).
Original code: https://github.com/Julian-Wyatt/AnoDDPM (``GaussianDiffusion.py::forward_backward``,
``detection.py``; args28 holds the simplex settings). METHOD_SPEC_DIFFUSION.md §1, §2.

AnoDDPM trains nothing here: it reuses the grid's fitted ``ddpm`` (``Method.dependencies`` names
it; the runner fits or loads it and hands it over, as ``mhd`` reuses ``cddpm``). Per batch of slices:

1. Map the slices to [-1, 1]; draw one noise field (simplex, shared by the batch, or Gaussian) and
   noise the slices to index ``t_start - 1`` (the paper's depth lambda; timesteps are counted from 1
   as in the DDPM's ``t_test``).
2. Run the reverse chain (:func:`uadbench.diffusion.sampling.reverse_chain`) down to index 0: at
   each visited index the DDPM predicts x0, clamped to [-1, 1]; an ancestral step with the
   fixed-large variance (beta) and a fresh noise draw of the same kind (AnoDDPM draws its ``z``
   from the simplex generator too). ``sample_steps = 0`` visits every index (``t_start`` network
   passes, the paper); ``n > 0`` visits ``n`` evenly spaced indices with respaced betas.
3. The reconstruction is the chain's end in [0, 1]; the map is ``|x - x_hat|``.

Cost: one UNet pass per visited index and slice (``network_passes``: 481 at ``paper``, 8 at ``cpu``)
and one noise field per step; the runner records the passes in every cell's cost. At the ``cpu``
preset on the phantom a volume takes about 7.5 times the DDPM's single-step prediction.

Deviations from the paper:
- The network is the project's DDPM: an x0 predictor trained with single-step L1 on the cosine
  schedule (AnoDDPM: an eps predictor, L2, linear schedule, guided-diffusion UNet). The chain uses
  its x0 output directly (no eps conversion is needed).
- ``t_start = 481`` in the ``paper`` preset: the reference's lambda = 250 on the linear schedule
  (noised to index 249, alpha_bar 0.524) is reached at cosine index 480 (alpha_bar 0.523).
  The metric routine of the reference hard-codes 200 (cosine 392); ``t_start`` is a config field
  for sweeps.
- The map is the absolute residual, not the reference's squared one; squaring is monotone, so the
  ranking of voxels (AUROC, AUPRC before post-processing) is the same. Post-processing and
  thresholds are the harness's protocol, not the reference's fixed threshold 0.5.
- Simplex fields are the project's 2D OpenSimplex octaves (one field per draw, shared by the
  batch), not the reference's 3D noise sliced at the diffusion index (its author calls the slice
  choice immaterial when the seed is redrawn, as here).
- ``sampler = "ddim"`` (with ``eta``) and ``sample_steps > 0`` are respaced, cheaper chains that
  the paper does not use; the ``cpu`` and ``smoke`` presets use them, and the matching DDPM preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from uadbench.config import normalise_overrides
from uadbench.diffusion.noise import NOISE_KINDS, create_noise
from uadbench.diffusion.sampling import SAMPLERS, VARIANCES, StepHook, chain_steps, reverse_chain, spaced_indices
from uadbench.errors import ConfigError
from uadbench.method import AnomalyOutput, Method, ReusingMethod, create_config
from uadbench.nn.utils import eval_mode, module_device
from uadbench.registry import register_method

BASE_METHOD = "ddpm"


@dataclass(frozen=True)
class AnoDDPMConfig:
    """The reverse chain run on a fitted DDPM; defaults are the reference's settings on the cosine schedule."""

    base_preset: str = "paper"
    base_overrides: Any = ()  # ddpm overrides: a table or (key, value) pairs, kept as sorted pairs
    t_start: int = 481  # noise to index t_start - 1 (lambda); counted from 1 like the DDPM's t_test
    sample_steps: int = 0  # network passes of the chain; 0: every index from t_start - 1 to 0
    noise: str = "simplex"  # the first noising and every ancestral draw
    sampler: str = "ddpm"
    variance: str = "large"  # ancestral step: "large" = beta (AnoDDPM), "small" = posterior variance
    eta: float = 0.0  # DDIM only: 0 deterministic, 1 the ancestral step with the posterior variance

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_overrides", normalise_overrides(self.base_overrides, BASE_METHOD))
        for name, value, valid in (("noise", self.noise, NOISE_KINDS), ("sampler", self.sampler, SAMPLERS),
                                   ("variance", self.variance, VARIANCES)):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.sample_steps < 0 or self.eta < 0:
            raise ConfigError(f"sample_steps must be >= 0 (0: every index) and eta >= 0, got {self.sample_steps}, {self.eta}")
        base = self.base_config()  # validates the preset and the overrides
        if not 1 <= self.t_start <= base.timesteps:
            raise ConfigError(f"t_start must lie in [1, {base.timesteps}] (the DDPM's timesteps), got {self.t_start}")

    def base_config(self) -> Any:
        return create_config(BASE_METHOD, self.base_preset, **dict(self.base_overrides))

    @property
    def indices(self) -> tuple[int, ...]:
        """The schedule indices the chain visits, from ``t_start - 1`` down to 0."""
        return spaced_indices(self.t_start - 1, self.sample_steps)


class DiffusionChainMethod(ReusingMethod):
    """A method that runs reverse chains on a fitted ``ddpm`` and trains nothing of its own.

    Subclasses set ``Config`` (with the :class:`AnoDDPMConfig` fields) and implement ``predict``
    with :meth:`run_chain`.
    """

    config: AnoDDPMConfig
    base_method: ClassVar[str] = BASE_METHOD

    @property
    def ddpm(self) -> Method | None:
        """The fitted DDPM the chains run on (None before fit or load_state_dict)."""
        return self.base

    @property
    def network_passes(self) -> int:
        """UNet passes per slice (one per visited index)."""
        return len(self.config.indices)

    @torch.no_grad()
    def run_chain(self, images: Tensor, generator: torch.Generator,
                  make_hook: Callable[[Tensor], StepHook] | None = None) -> Tensor:
        """Noise ``images`` ([0, 1]) to the first index and run the chain to 0 on the DDPM's device;
        returns the end of the chain in [0, 1] on ``images``' device.

        ``make_hook(noise)``, given the field of the first noising (in [-1, 1] units, on the DDPM's
        device), returns the ``on_step`` hook of :func:`~uadbench.diffusion.sampling.reverse_chain`
        (it works in [-1, 1]).
        """
        cfg = self.config
        model = self.require_base().model  # type: ignore[attr-defined]
        base = cfg.base_config()
        sampler = create_noise(cfg.noise, octaves=base.simplex_octaves, persistence=base.simplex_persistence,
                               frequency=base.simplex_frequency)
        steps = chain_steps(model.process.schedule, cfg.indices)
        with eval_mode(model):
            device = module_device(model)
            x0 = images.to(device=device, dtype=torch.float32) * 2 - 1
            noise = sampler(tuple(x0.shape), generator, device).to(x0.dtype)
            t = torch.full((x0.shape[0],), steps[0].index, dtype=torch.long, device=device)
            x_t = model.process.q_sample(x0, t, noise)

            def draw(like: Tensor) -> Tensor:
                return sampler(tuple(like.shape), generator, like.device).to(like.dtype)

            out = reverse_chain(model.denoiser(None), x_t, steps, draw, sampler=cfg.sampler, variance=cfg.variance,
                                eta=cfg.eta, clip=True, on_step=make_hook(noise) if make_hook else None)
        return ((out + 1) / 2).to(images.device)


@register_method("anoddpm")
class AnoDDPM(DiffusionChainMethod):
    """Partial diffusion to ``t_start`` and the full reverse chain on a fitted DDPM (Wyatt et al. 2022)."""

    Config: ClassVar[type] = AnoDDPMConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "cpu": {"base_preset": "cpu", "sample_steps": 8},
        "smoke": {"base_preset": "smoke", "sample_steps": 3},
    }

    @torch.no_grad()
    def predict(self, images: Tensor, *, generator: torch.Generator) -> AnomalyOutput:
        x = images.float()
        recon = self.run_chain(x, generator)
        return AnomalyOutput(anomaly_map=(x - recon).abs(), reconstruction=recon)
