"""The compute layer: sandboxes in which agents run code, ephemeral or persistent.

``syscalls.py`` binds the ``sandbox.*`` syscalls to the table; ``manager.py`` owns the
live sandboxes of one host (timeouts, metering, the warm pool); a driver
(``drivers/bwrap.py`` by default) starts and isolates them.
"""
