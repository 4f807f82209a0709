"""The tools layer: so far its credential vault (``tools/vault.py``)."""
