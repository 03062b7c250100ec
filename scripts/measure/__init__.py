"""Measurement tools: this project's training step against the official one (``official_step``)."""
