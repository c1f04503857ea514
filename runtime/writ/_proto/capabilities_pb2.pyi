from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_OP_UNSPECIFIED: _ClassVar[FileOp]
    READ: _ClassVar[FileOp]
    LIST: _ClassVar[FileOp]
    STAT: _ClassVar[FileOp]
    WRITE: _ClassVar[FileOp]
    CREATE: _ClassVar[FileOp]
    DELETE: _ClassVar[FileOp]
FILE_OP_UNSPECIFIED: FileOp
READ: FileOp
LIST: FileOp
STAT: FileOp
WRITE: FileOp
CREATE: FileOp
DELETE: FileOp

class FileRule(_message.Message):
    __slots__ = ("id", "workspace", "paths", "ops", "max_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    workspace: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    ops: _containers.RepeatedScalarFieldContainer[FileOp]
    max_bytes: int
    def __init__(self, id: _Optional[str] = ..., workspace: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ..., ops: _Optional[_Iterable[_Union[FileOp, str]]] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class ToolRule(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("memory_mb", "cpus", "pids", "timeout_s", "tmp_mb")
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TMP_MB_FIELD_NUMBER: _ClassVar[int]
    memory_mb: int
    cpus: float
    pids: int
    timeout_s: int
    tmp_mb: int
    def __init__(self, memory_mb: _Optional[int] = ..., cpus: _Optional[float] = ..., pids: _Optional[int] = ..., timeout_s: _Optional[int] = ..., tmp_mb: _Optional[int] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("name", "image", "description", "input_schema", "files", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: str
    description: str
    input_schema: _struct_pb2.Struct
    files: _containers.RepeatedCompositeFieldContainer[FileRule]
    limits: Limits
    def __init__(self, name: _Optional[str] = ..., image: _Optional[str] = ..., description: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., files: _Optional[_Iterable[_Union[FileRule, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("tools", "files", "not_before", "expires_at", "limits")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolRule]
    files: _containers.RepeatedCompositeFieldContainer[FileRule]
    not_before: int
    expires_at: int
    limits: Limits
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolRule, _Mapping]]] = ..., files: _Optional[_Iterable[_Union[FileRule, _Mapping]]] = ..., not_before: _Optional[int] = ..., expires_at: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...
