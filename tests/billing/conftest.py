"""Fixtures of the spine tests (see kernel/helpers.py)."""

from kernel.helpers import open_kernel

__all__ = ["open_kernel"]
