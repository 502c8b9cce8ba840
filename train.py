"""Train a model: ``python train.py model=<name> data=<name> [overrides]``."""

import hydra
from omegaconf import DictConfig

import hepexp.run  # noqa: F401  (registers config resolvers)
from hepexp.run.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
