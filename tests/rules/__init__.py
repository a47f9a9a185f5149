"""Tests of the rule library against zennit, captum and a matrix-form reference."""
