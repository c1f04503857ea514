"""The pure authority core: tokens and the decision function.

Nothing here does I/O, reads a clock or logs. Allowed imports: the standard library,
``writ._proto`` and ``writ.errors`` (tests/unit/test_layout.py enforces this).
"""
