"""What security teams hold and check: Ed25519 keys, manifest signatures and the strict
broker's pinning (signing.py), manifest review (review.py: lint, diff, explain)."""
