"""A task written outside atlasd, as a user would: one module (this one), no registry line,
no change to atlasd. It exists to show that the task contract (atlasd.datasets.base.TaskSpec)
is all that discovery, the downstream comparison and the degeneracy study need.

The world: smooth random fields (Gaussian bumps) and, per pixel, whether the field is strongly
curved downward, ``y = [a f_xx + b f_yy < -c]``. With ``a = b`` (the default) the label map is
equivariant under rotations and reflections of the plane: O(2); ``anisotropy: [a, b]`` with
``a != b`` breaks it (the study's symmetry-broken variant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from atlasd import Atlas
from atlasd.datasets.base import TaskSpec, not_set_up
from atlasd.datasets.splits import SplitsDataModule

SIZE = 32
CENTERS = ((10, 10), (10, 21), (21, 10), (21, 21), (16, 16))
RADIUS = 6


def curved_world(
    n: int, anisotropy: Sequence[float], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fields ``(n, 1, SIZE, SIZE)`` float32 and their labels ``(n, SIZE, SIZE)`` int64."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(SIZE, dtype=torch.float32)
    bumps = 12
    centre = torch.rand(n, bumps, 2, generator=gen) * SIZE
    amp = torch.randn(n, bumps, 1, 1, generator=gen)
    d2 = (rows[:, None] - centre[..., 0, None, None]) ** 2 + (
        rows[None, :] - centre[..., 1, None, None]
    ) ** 2
    x = (amp * torch.exp(-d2 / (2 * 3.0**2))).sum(1, keepdim=True)  # (n, 1, SIZE, SIZE)
    return x, labels(x, anisotropy)


def labels(x: torch.Tensor, anisotropy: Sequence[float]) -> torch.Tensor:
    """``[a f_xx + b f_yy < -0.05]`` of fields ``(n, 1, H, W)``: ``(n, H, W)`` int64."""
    a, b = (float(v) for v in anisotropy)
    # second differences along rows (y) and columns (x), zero outside the field
    f_yy = F.conv2d(x, torch.tensor([[[[1.0], [-2.0], [1.0]]]]), padding=(1, 0))
    f_xx = F.conv2d(x, torch.tensor([[[[1.0, -2.0, 1.0]]]]), padding=(0, 1))
    return (a * f_xx + b * f_yy < -0.05).squeeze(1).long()


class CurvedWorld(SplitsDataModule):
    """The curved-world task: kind local, one field channel, two classes per pixel."""

    kind = "local"

    def __init__(
        self,
        n: int = 200,
        n_test: int = 20,
        anisotropy: Sequence[float] = (1.0, 1.0),
        seed: int = 0,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        self.n, self.n_test, self.seed = n, n_test, seed
        self.anisotropy = tuple(anisotropy)
        self.batch_size, self.num_workers = batch_size, 0
        self.atlas = Atlas.grid((SIZE, SIZE), CENTERS, RADIUS)
        flip = torch.diag(torch.tensor([1.0, -1.0]))
        self.ground_truth = {
            "algebra": torch.tensor([[[0.0, -1.0], [1.0, 0.0]]]),
            "cosets": torch.stack([torch.eye(2), flip]),
        }
        self.x = self.y = self.x_test = self.y_test = None

    @property
    def spec(self) -> TaskSpec:
        if self.x is None:
            raise not_set_up(self)
        return TaskSpec(
            name="curved_world",
            kind="local",
            inputs="fields",
            d=2,
            in_channels=1,
            target="classification",
            n_classes=2,
            metric="accuracy",
            ground_truth=self.ground_truth,
            atlas=self.atlas,
            broken={"anisotropy": [1.5, 0.5]},
        )

    def setup(self, stage: str | None = None) -> None:
        if self.x is not None:
            return
        x, y = curved_world(self.n + self.n_test, self.anisotropy, self.seed)
        self.x, self.y = x[: self.n], y[: self.n]
        self.x_test, self.y_test = x[self.n :], y[self.n :]
        n_val = max(1, self.n // 10)
        self.train_dataset = TensorDataset(self.x[n_val:], self.y[n_val:])
        self.val_dataset = TensorDataset(self.x[:n_val], self.y[:n_val])
