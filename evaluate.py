"""Evaluate a trained model: ``python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt``."""

import hydra
from omegaconf import DictConfig

import hepexp.run  # noqa: F401  (registers config resolvers)
from hepexp.run.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
