"""Coalmine: shadow tests, canary releases and anytime-valid analysis for ML models."""

__version__ = "0.1.0"
