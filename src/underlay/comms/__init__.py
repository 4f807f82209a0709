"""Comms (layer 2, with identity): the organisation's event log and agents' mailboxes.

``events.py`` (a durable, ordered log read by cursor and topic, with long polls),
``mailbox.py`` (messages to one agent, read and acknowledged by it), ``notify.py``
(in-process wake-ups for long polls), ``scrub.py`` (no secret is written), ``models.py``
and ``syscalls.py`` (``events.*``, ``messages.*``). Details in docs/comms.md.
"""
