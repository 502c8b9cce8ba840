"""TrackML: reader/writer of the official CSV format, simulator, sub-events, views."""
