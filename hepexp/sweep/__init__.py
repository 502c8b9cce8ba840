"""Optuna hyperparameter sweeps under Hydra multirun.

``hydra_plugins/hepexp_optuna_sweeper`` is the Hydra sweeper (config: ``hepexp/conf/hydra/sweeper``);
this package holds its parts: :mod:`space` (Hydra sweep syntax -> Optuna distributions),
:mod:`study` (storage, resuming, claiming trials across processes), :mod:`trial` (the training
job's side: its trial, pruning callback, logger grouping), :mod:`report` (results, W&B summary).
"""
