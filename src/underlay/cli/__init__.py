"""The ``underlay`` command line: Typer + Rich, bound to the syscall table through the SDK."""
