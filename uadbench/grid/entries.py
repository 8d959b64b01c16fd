"""A grid's entries: a method (with preset, overrides and sweep), an evaluation dataset, a shift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uadbench.records import shift_label

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    preset: str = "paper"
    overrides: tuple[tuple[str, Any], ...] = ()
    label: str = ""
    precision: str = "fp32"  # training and prediction arithmetic: fp32, bf16 or fp16 (with a grad scaler)
    compile: bool = False  # torch.compile the networks that dominate a step (methods that support it)
    sweep: tuple[tuple[str, Any], ...] = ()  # the swept config fields and this entry's values (in overrides too)

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    val_split: str = "val"
    test_split: str = "test"


SITE_SHIFT = "site"  # a held-out site: ShiftSpec("site@IOP"), no severity


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    severity: float | None = None

    @property
    def label(self) -> str:
        return shift_label(self.name, self.severity)

    @property
    def site(self) -> str | None:
        """The held-out site of a site shift (``site@IOP`` -> ``IOP``): the cell evaluates that site's
        subjects of the same datasets, unshifted, instead of transforming images; None for other shifts."""
        family, _, site = self.name.partition("@")
        return site if family == SITE_SHIFT and site else None


NO_SHIFT_SPEC = ShiftSpec("none")
