"""fetch-url: one HTTP GET through the broker; returns the status and the start of the body.

Input: {"url": "https://status.example.com/v1/summary", "max_chars": 2000}
"""

from writ_tool import net


def main(args: dict) -> dict:
    r = net.fetch(args["url"], timeout=args.get("timeout"))
    limit = int(args.get("max_chars", 2000))
    return {"url": r.url, "status": r.status, "content_type": r.header("content-type"),
            "chars": len(r.text), "text": r.text[:limit]}
