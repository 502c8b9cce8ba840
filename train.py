"""Train a model: ``python train.py model=<name> data=<name> [overrides]`` (installed: ``hepexp-train``)."""

from hepexp.cli import train_main

if __name__ == "__main__":
    train_main()
