"""The audit log: one hash-chained record per decision, durable before the effect."""

from .file_sink import FileSink, read_records, verify_chain
from .memory_sink import MemorySink
from .sink import AuditSink, chain_hash, now_rfc3339

__all__ = ["AuditSink", "FileSink", "MemorySink", "chain_hash", "now_rfc3339", "read_records",
           "verify_chain"]
