"""Sandbox drivers, one per file, chosen by name in ``compute.driver``."""
