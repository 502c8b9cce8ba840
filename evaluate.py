"""Evaluate a trained model: ``python evaluate.py ckpt_path=<run>/checkpoints/best.ckpt`` (installed: ``hepexp-evaluate``)."""

from hepexp.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
