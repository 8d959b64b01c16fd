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


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    severity: float | None = None

    @property
    def label(self) -> str:
        return shift_label(self.name, self.severity)


NO_SHIFT_SPEC = ShiftSpec("none")
