from . import capabilities_pb2 as _capabilities_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenBlock(_message.Message):
    __slots__ = ("id", "issued_at", "grant", "invocation_id", "tool")
    ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    issued_at: int
    grant: _capabilities_pb2.Grant
    invocation_id: str
    tool: str
    def __init__(self, id: _Optional[bytes] = ..., issued_at: _Optional[int] = ..., grant: _Optional[_Union[_capabilities_pb2.Grant, _Mapping]] = ..., invocation_id: _Optional[str] = ..., tool: _Optional[str] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("version", "key_id", "blocks", "mac")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    version: int
    key_id: str
    blocks: _containers.RepeatedScalarFieldContainer[bytes]
    mac: bytes
    def __init__(self, version: _Optional[int] = ..., key_id: _Optional[str] = ..., blocks: _Optional[_Iterable[bytes]] = ..., mac: _Optional[bytes] = ...) -> None: ...
