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
    MKDIR: _ClassVar[FileOp]
    RENAME: _ClassVar[FileOp]
FILE_OP_UNSPECIFIED: FileOp
READ: FileOp
LIST: FileOp
STAT: FileOp
WRITE: FileOp
CREATE: FileOp
DELETE: FileOp
MKDIR: FileOp
RENAME: FileOp

class FileRule(_message.Message):
    __slots__ = ("id", "workspace", "paths", "ops", "max_bytes", "read_budget_bytes", "write_budget_bytes", "create_budget_files")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_BUDGET_FILES_FIELD_NUMBER: _ClassVar[int]
    id: str
    workspace: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    ops: _containers.RepeatedScalarFieldContainer[FileOp]
    max_bytes: int
    read_budget_bytes: int
    write_budget_bytes: int
    create_budget_files: int
    def __init__(self, id: _Optional[str] = ..., workspace: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ..., ops: _Optional[_Iterable[_Union[FileOp, str]]] = ..., max_bytes: _Optional[int] = ..., read_budget_bytes: _Optional[int] = ..., write_budget_bytes: _Optional[int] = ..., create_budget_files: _Optional[int] = ...) -> None: ...

class NumberRange(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class ArgConstraint(_message.Message):
    __slots__ = ("arg", "optional", "exact", "one_of", "prefix", "glob", "regex", "range", "max_len")
    ARG_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    ONE_OF_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    GLOB_FIELD_NUMBER: _ClassVar[int]
    REGEX_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    arg: str
    optional: bool
    exact: _struct_pb2.Value
    one_of: _struct_pb2.ListValue
    prefix: str
    glob: str
    regex: str
    range: NumberRange
    max_len: int
    def __init__(self, arg: _Optional[str] = ..., optional: _Optional[bool] = ..., exact: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., one_of: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., prefix: _Optional[str] = ..., glob: _Optional[str] = ..., regex: _Optional[str] = ..., range: _Optional[_Union[NumberRange, _Mapping]] = ..., max_len: _Optional[int] = ...) -> None: ...

class NetRule(_message.Message):
    __slots__ = ("id", "schemes", "host", "ports", "methods", "path_prefixes", "max_requests", "max_bytes", "timeout_seconds", "secrets")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PATH_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    schemes: _containers.RepeatedScalarFieldContainer[str]
    host: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    path_prefixes: _containers.RepeatedScalarFieldContainer[str]
    max_requests: int
    max_bytes: int
    timeout_seconds: int
    secrets: _containers.RepeatedCompositeFieldContainer[SecretHeader]
    def __init__(self, id: _Optional[str] = ..., schemes: _Optional[_Iterable[str]] = ..., host: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., methods: _Optional[_Iterable[str]] = ..., path_prefixes: _Optional[_Iterable[str]] = ..., max_requests: _Optional[int] = ..., max_bytes: _Optional[int] = ..., timeout_seconds: _Optional[int] = ..., secrets: _Optional[_Iterable[_Union[SecretHeader, _Mapping]]] = ...) -> None: ...

class SecretHeader(_message.Message):
    __slots__ = ("secret", "header", "path_prefix")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    secret: str
    header: str
    path_prefix: str
    def __init__(self, secret: _Optional[str] = ..., header: _Optional[str] = ..., path_prefix: _Optional[str] = ...) -> None: ...

class PayRule(_message.Message):
    __slots__ = ("id", "payees", "currency", "max_per_payment", "budget", "max_count", "approval_above", "approval_always")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYEES_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_PAYMENT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ABOVE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ALWAYS_FIELD_NUMBER: _ClassVar[int]
    id: str
    payees: _containers.RepeatedScalarFieldContainer[str]
    currency: str
    max_per_payment: int
    budget: int
    max_count: int
    approval_above: int
    approval_always: bool
    def __init__(self, id: _Optional[str] = ..., payees: _Optional[_Iterable[str]] = ..., currency: _Optional[str] = ..., max_per_payment: _Optional[int] = ..., budget: _Optional[int] = ..., max_count: _Optional[int] = ..., approval_above: _Optional[int] = ..., approval_always: _Optional[bool] = ...) -> None: ...

class ToolRule(_message.Message):
    __slots__ = ("id", "name", "args", "only_listed_args", "max_calls")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ONLY_LISTED_ARGS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    args: _containers.RepeatedCompositeFieldContainer[ArgConstraint]
    only_listed_args: bool
    max_calls: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., args: _Optional[_Iterable[_Union[ArgConstraint, _Mapping]]] = ..., only_listed_args: _Optional[bool] = ..., max_calls: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("name", "image", "description", "input_schema", "files", "limits", "net", "pay")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    PAY_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: str
    description: str
    input_schema: _struct_pb2.Struct
    files: _containers.RepeatedCompositeFieldContainer[FileRule]
    limits: Limits
    net: _containers.RepeatedCompositeFieldContainer[NetRule]
    pay: _containers.RepeatedCompositeFieldContainer[PayRule]
    def __init__(self, name: _Optional[str] = ..., image: _Optional[str] = ..., description: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., files: _Optional[_Iterable[_Union[FileRule, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., net: _Optional[_Iterable[_Union[NetRule, _Mapping]]] = ..., pay: _Optional[_Iterable[_Union[PayRule, _Mapping]]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("tools", "files", "not_before", "expires_at", "limits", "net", "pay")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    PAY_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolRule]
    files: _containers.RepeatedCompositeFieldContainer[FileRule]
    not_before: int
    expires_at: int
    limits: Limits
    net: _containers.RepeatedCompositeFieldContainer[NetRule]
    pay: _containers.RepeatedCompositeFieldContainer[PayRule]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolRule, _Mapping]]] = ..., files: _Optional[_Iterable[_Union[FileRule, _Mapping]]] = ..., not_before: _Optional[int] = ..., expires_at: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., net: _Optional[_Iterable[_Union[NetRule, _Mapping]]] = ..., pay: _Optional[_Iterable[_Union[PayRule, _Mapping]]] = ...) -> None: ...
