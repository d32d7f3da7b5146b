"""An alert sink that posts plain text to a chat webhook."""

from __future__ import annotations

from runtime.alerts import Alert
from runtime.plugin_api.peer import PeerClient


class ChatSink(PeerClient):
    peer = "chat-webhook"
    name = "chat"

    def __init__(self, url: str) -> None:
        super().__init__(url, secrets=[url])

    async def send(self, alert: Alert) -> None:
        text = f"[{alert.severity.value}] {alert.title}\n{alert.text}"
        if alert.suppressed_count:
            text += f"\n({alert.suppressed_count} similar alerts suppressed)"
        await self.request("POST", "", json={"text": text})
