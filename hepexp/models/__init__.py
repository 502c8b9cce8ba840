"""One LightningModule per system, plus shared building blocks."""
