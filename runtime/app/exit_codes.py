"""Process exit codes (sysexits.h), as systemd's unit and operators see them."""

EX_OK = 0
EX_UNAVAILABLE = 69
"""`vpnbot status`: the instance does not answer."""
EX_SOFTWARE = 70
"""An unexpected error: a bug."""
EX_OSERR = 71
"""A listening port cannot be bound at start (in use, or not allowed): the message names the
port and the setting or flag that changes it. systemd restarts: a previous process may still
hold it."""
EX_TEMPFAIL = 75
"""Temporary: a failure budget escalated, or the database is unreachable. Restart later."""
EX_CONFIG = 78
"""The configuration (or the database's schema version) needs an operator."""
