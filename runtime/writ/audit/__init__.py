"""The audit log: one hash-chained record per decision, durable before the effect."""

from .checkpoint import Checkpoint, CheckpointKey, read_checkpoint_file, sidecar_path
from .file_sink import FileSink, checkpoint_timer, open_broker_sink
from .memory_sink import MemorySink
from .sink import AuditSink, chain_hash, detail_json, now_rfc3339, record_line
from .verify import Problem, Verification, read_records, verify_chain, verify_log

__all__ = ["AuditSink", "Checkpoint", "CheckpointKey", "FileSink", "MemorySink", "Problem",
           "Verification", "chain_hash", "checkpoint_timer", "detail_json", "now_rfc3339", "open_broker_sink", "read_checkpoint_file",
           "read_records", "record_line", "sidecar_path", "verify_chain", "verify_log"]
