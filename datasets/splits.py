"""The loaders every task's DataModule shares: in-memory train / val / test splits."""

from __future__ import annotations

import lightning
import torch
from torch.utils.data import DataLoader

__all__ = ["SplitsDataModule"]


class SplitsDataModule(lightning.LightningDataModule):
    """A LightningDataModule whose ``setup()`` fills ``train_dataset``, ``val_dataset`` and
    (where the task has one) ``test_dataset``; subclasses set ``batch_size``, ``num_workers``
    and ``seed``.

    Loaders call ``setup()`` on first use. The training loader shuffles with a generator seeded
    by ``seed``, never the global RNG; validation and test keep their order.
    """

    train_dataset = None
    val_dataset = None
    test_dataset = None

    def _loader(self, split: str) -> DataLoader:
        if getattr(self, f"{split}_dataset") is None:
            self.setup()
        dataset = getattr(self, f"{split}_dataset")
        if dataset is None:
            raise ValueError(f"{type(self).__name__} has no {split} split")
        shuffle = split == "train"
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
