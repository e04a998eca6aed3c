"""The memory binder against the conformance suite."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from binder_core.testing.conformance import BinderConformance, Subject


class TestMemoryConformance(BinderConformance):
    @pytest.fixture
    def subject(self, unique_name: Callable[[str], str]) -> Subject:
        return Subject(
            "memory", {}, names=unique_name, dead_letter_group="dlq", timeout=10,
            single_instance=True,
        )  # fmt: skip
