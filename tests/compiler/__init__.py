"""Tests of the compiler and the explainer."""
