"""hepexp: Hydra-configured experiment framework for machine learning in high-energy physics."""
