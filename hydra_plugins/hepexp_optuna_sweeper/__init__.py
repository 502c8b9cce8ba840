"""hepexp's Optuna sweeper for Hydra (Optuna >= 4): ``hydra/sweeper=optuna``."""
