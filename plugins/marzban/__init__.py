"""The Marzban VPN panel."""
