"""Physics metrics: tracking scores and efficiencies, resolutions, distribution distances."""
