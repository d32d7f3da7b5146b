"""Telegram payments: Stars (XTR) and card payments through a provider token."""
