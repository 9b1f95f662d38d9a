"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch

import robustseg_lib  # noqa: F401  # before any test module imports papermill: jsonschema without the IRI grammar


class ModeProbe(torch.nn.Module):
    """Identity layer that records ``self.training`` at every forward (which mode a network was run in)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.training)
        return x


@pytest.fixture
def mode_probe() -> ModeProbe:
    """A fresh :class:`ModeProbe`."""
    return ModeProbe()
