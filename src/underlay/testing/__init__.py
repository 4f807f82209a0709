"""Test support shipped with underlay: fresh databases and kernels, fake clocks."""
