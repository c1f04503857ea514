"""word-count: count lines and words of every file in a workspace folder.

Input: {"dir": "reports", "workspace": "demo" (optional)}
"""

from writ_tool import files


def main(args: dict) -> dict:
    folder = args.get("dir", "")
    ws = args.get("workspace", "")
    counts = {}
    for entry in files.listdir(folder, workspace=ws):
        if entry.kind != "file":
            continue
        path = f"{folder}/{entry.name}" if folder else entry.name
        with files.open(path, workspace=ws) as f:
            lines = words = 0
            for line in f:
                lines += 1
                words += len(line.split())
        counts[path] = {"lines": lines, "words": words}
    return {"files": counts, "total_words": sum(c["words"] for c in counts.values())}
