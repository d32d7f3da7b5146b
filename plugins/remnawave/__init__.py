"""The Remnawave 3.x VPN panel."""
