"""Tests of the analyses (static, theory, CSC, sanity checks)."""
