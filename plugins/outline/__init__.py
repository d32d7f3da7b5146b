"""The Outline VPN server."""
