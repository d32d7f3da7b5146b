"""The fake CryptoBot's payment page: one invoice, and forms to pay it or let it expire.

Plain HTML forms posting to the page itself: no script, every value escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from starlette.responses import HTMLResponse

PAGE_ACTIONS = {"pay": "Paid. You can go back to the chat.", "expire": "The invoice expired."}
"""The forms' actions and what the page says after each."""

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28em;margin:2em auto;padding:0 1em}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.3em 1em}dt{color:#666}"
    "button{margin-right:.5em;padding:.5em 1em}.notice{padding:.5em;background:#eef}"
)


def invoice_page(
    invoice: dict[str, Any] | None, *, status_code: int = 200, notice: str = ""
) -> HTMLResponse:
    body = [f'<p class="notice" role="status">{escape(notice)}</p>' if notice else ""]
    if invoice is None:
        body.append("<h1>Crypto Pay</h1>")
    else:
        currency = invoice.get("fiat") or invoice.get("asset") or ""
        status = str(invoice.get("status", ""))
        rows = [
            ("Invoice", invoice.get("invoice_id")),
            ("Amount", f"{invoice.get('amount', '')} {currency}"),
            ("Description", invoice.get("description", "")),
            ("Status", status),
        ]
        if invoice.get("paid_at"):
            rows.append(("Paid at", invoice["paid_at"]))
        body.append("<h1>Crypto Pay (sandbox)</h1><dl>")
        body.extend(
            f"<dt>{escape(label)}</dt><dd id={label.lower()!r}>{escape(str(value))}</dd>"
            for label, value in rows
        )
        body.append("</dl>")
        if status == "active":
            body.append(
                '<form method="post">'
                '<button name="action" value="pay">Pay</button>'
                '<button name="action" value="expire">Let it expire</button>'
                "</form>"
            )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Crypto Pay (sandbox)</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )
    return HTMLResponse(html, status_code=status_code)
