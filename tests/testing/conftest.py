"""Shared pieces of the rule-testing toolkit's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BROKEN = Path(__file__).parent / "broken"


@pytest.fixture(scope="session")
def profile() -> str:
    """The runner's profile matching the suite's hypothesis profile (`ci`: 10 examples per property)."""
    return "ci" if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else "dev"
