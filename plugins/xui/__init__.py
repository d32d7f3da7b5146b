"""The 3x-ui VPN panel (v2 inbounds API and v3.1+ clients API)."""
