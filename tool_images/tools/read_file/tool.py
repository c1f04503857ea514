"""read-file: return the text of one workspace file.

Input: {"path": "reports/q3.csv", "workspace": "demo" (optional), "max_chars": 4000}
"""

from writ_tool import files


def main(args: dict) -> dict:
    text = files.read_text(args["path"], workspace=args.get("workspace", ""))
    limit = int(args.get("max_chars", 4000))
    return {"path": args["path"], "chars": len(text), "text": text[:limit]}
