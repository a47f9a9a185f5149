"""Helpers shared by the tests: oracle models and inputs, the matrix-form rule reference, toy networks, small
compiler test models, numeric Jacobians."""
