"""Base class of all data sources: a LightningDataModule that offers named views."""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hepexp.errors import ConfigError


class HEPDataModule(pl.LightningDataModule):
    """A data source that serves the view a model asks for.

    Subclasses list the views they can produce in ``views`` (name -> one-line description),
    the config keys that name training files besides ``source`` in ``file_keys``, and build the
    datasets of the requested ``view`` in ``setup``.
    """

    views: ClassVar[dict[str, str]] = {}
    #: config keys naming files besides ``source`` (e.g. a jet table's ``train_path``): a new
    #: ``data.source`` given to evaluate.py / convert.py clears them unless they are given too
    file_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        view: str,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if view not in self.views:
            raise ConfigError(
                f"{type(self).__name__} cannot provide view '{view}'; it provides: "
                f"{', '.join(self.views)}"
            )
        self.view = view
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    def fit_sample(self) -> torch.Tensor:
        """Raw model inputs from the training split, for fitting normalisations."""
        raise NotImplementedError(f"{type(self).__name__} does not provide a fit sample")

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` ("train", "val" or "test"), set up on first use."""
        if split not in self.datasets:
            self.setup("fit" if split in ("train", "val") else "test")
        if split not in self.datasets:
            raise ConfigError(f"{type(self).__name__} has no '{split}' split")
        return self.datasets[split]

    def loader(self, split: str, shuffle: bool | None = None, **kwargs: Any) -> DataLoader:
        """A DataLoader over ``split``; training data is shuffled unless told otherwise.

        Training batches are all full (the shuffled remainder is dropped each epoch) when the
        split holds more than one batch: a batch of a single sample breaks batch norm.
        """
        dataset = self.dataset(split)
        options = dict(
            batch_size=self.batch_size,
            shuffle=(split == "train") if shuffle is None else shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
        options.update(kwargs)
        options.setdefault(
            "drop_last", split == "train" and _length(dataset) > options["batch_size"]
        )
        return DataLoader(dataset, **options)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")


def _length(dataset: Any) -> int:
    """Number of samples of a map-style dataset; 0 for a stream without a length."""
    try:
        return len(dataset)
    except TypeError:
        return 0
