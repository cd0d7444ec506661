"""Streaming over GPS time: cadence, stream processor, feature sources, segments, checkpoints."""
