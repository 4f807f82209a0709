"""Source of ``ulinit``, the in-sandbox supervisor (compiled on demand by ``compute.initbin``)."""
