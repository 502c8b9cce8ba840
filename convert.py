"""Convert data with a trained model: ``python convert.py ckpt_path=... input=... output=...`` (installed: ``hepexp-convert``)."""

from hepexp.cli import convert_main

if __name__ == "__main__":
    convert_main()
