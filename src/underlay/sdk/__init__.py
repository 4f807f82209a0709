"""The Python SDK: ``AsyncUnderlay`` (the source) and ``Underlay`` (derived, blocking)."""

from underlay.sdk.client import AsyncUnderlay
from underlay.sdk.sync import Underlay

__all__ = ["AsyncUnderlay", "Underlay"]
