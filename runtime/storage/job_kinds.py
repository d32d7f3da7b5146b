"""The kinds of outbox jobs: side effects recorded with a state change, done by workers."""

ACTIVATE = "vpn.activate"
"""Create or update the VPN account of a subscription (payload: subscription_id)."""
REVOKE = "vpn.revoke"
"""Disable the VPN account of a subscription, or delete it (payload: subscription_id, and
``delete: true`` for a deletion)."""
NOTIFY = "telegram.notify"
"""Send a message to a user (payload: chat_id, template, params)."""
