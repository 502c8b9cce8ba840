"""Convert data with a trained model: ``python convert.py ckpt_path=... input=... output=...``."""

import hydra
from omegaconf import DictConfig

import hepexp.run  # noqa: F401  (registers config resolvers)
from hepexp.run.convert import convert


@hydra.main(version_base="1.3", config_path="conf", config_name="convert")
def main(cfg: DictConfig) -> None:
    convert(cfg)


if __name__ == "__main__":
    main()
