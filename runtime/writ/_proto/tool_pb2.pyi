from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WriteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_MODE_UNSPECIFIED: _ClassVar[WriteMode]
    WRITE_MODE_REPLACE: _ClassVar[WriteMode]
    WRITE_MODE_CREATE: _ClassVar[WriteMode]
    WRITE_MODE_CREATE_OR_REPLACE: _ClassVar[WriteMode]
WRITE_MODE_UNSPECIFIED: WriteMode
WRITE_MODE_REPLACE: WriteMode
WRITE_MODE_CREATE: WriteMode
WRITE_MODE_CREATE_OR_REPLACE: WriteMode

class StartRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("invocation_id", "tool", "input_json", "token")
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    invocation_id: str
    tool: str
    input_json: str
    token: str
    def __init__(self, invocation_id: _Optional[str] = ..., tool: _Optional[str] = ..., input_json: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ("output_json", "error")
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    output_json: str
    error: FinishError
    def __init__(self, output_json: _Optional[str] = ..., error: _Optional[_Union[FinishError, _Mapping]] = ...) -> None: ...

class FinishError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FinishResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("workspace", "path", "offset", "length")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    offset: int
    length: int
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListDirRequest(_message.Message):
    __slots__ = ("workspace", "path")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DirEntry(_message.Message):
    __slots__ = ("name", "kind", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    size: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ListDirResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DirEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[DirEntry, _Mapping]]] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("workspace", "path")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class StatResponse(_message.Message):
    __slots__ = ("kind", "size", "mtime_ns")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    size: int
    mtime_ns: int
    def __init__(self, kind: _Optional[str] = ..., size: _Optional[int] = ..., mtime_ns: _Optional[int] = ...) -> None: ...

class OpenFileRequest(_message.Message):
    __slots__ = ("workspace", "path")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class OpenFileResponse(_message.Message):
    __slots__ = ("ticket", "size")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    size: int
    def __init__(self, ticket: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("workspace", "path", "mode", "data", "finish", "source_ticket")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TICKET_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    mode: WriteMode
    data: bytes
    finish: bool
    source_ticket: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., mode: _Optional[_Union[WriteMode, str]] = ..., data: _Optional[bytes] = ..., finish: _Optional[bool] = ..., source_ticket: _Optional[str] = ...) -> None: ...

class WriteFileResponse(_message.Message):
    __slots__ = ("bytes_written", "created")
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    bytes_written: int
    created: bool
    def __init__(self, bytes_written: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class MakeDirRequest(_message.Message):
    __slots__ = ("workspace", "path")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class MakeDirResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("workspace", "path")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenameRequest(_message.Message):
    __slots__ = ("workspace", "from_path", "to_path", "replace")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    FROM_PATH_FIELD_NUMBER: _ClassVar[int]
    TO_PATH_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    from_path: str
    to_path: str
    replace: bool
    def __init__(self, workspace: _Optional[str] = ..., from_path: _Optional[str] = ..., to_path: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class RenameResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PayRequest(_message.Message):
    __slots__ = ("payee", "amount", "currency", "memo", "idempotency_key")
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    payee: str
    amount: int
    currency: str
    memo: str
    idempotency_key: str
    def __init__(self, payee: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., memo: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class PayResponse(_message.Message):
    __slots__ = ("payment_id", "status", "transfer_id", "payee", "amount", "currency", "memo", "idempotency_key", "replayed", "approval_id")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    status: str
    transfer_id: str
    payee: str
    amount: int
    currency: str
    memo: str
    idempotency_key: str
    replayed: bool
    approval_id: str
    def __init__(self, payment_id: _Optional[str] = ..., status: _Optional[str] = ..., transfer_id: _Optional[str] = ..., payee: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., memo: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., replayed: _Optional[bool] = ..., approval_id: _Optional[str] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("idempotency_key",)
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    def __init__(self, idempotency_key: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HttpRequestHead(_message.Message):
    __slots__ = ("method", "url", "headers", "timeout_s", "follow_redirects", "max_redirects", "body_via_pipe")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_REDIRECTS_FIELD_NUMBER: _ClassVar[int]
    MAX_REDIRECTS_FIELD_NUMBER: _ClassVar[int]
    BODY_VIA_PIPE_FIELD_NUMBER: _ClassVar[int]
    method: str
    url: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    timeout_s: float
    follow_redirects: bool
    max_redirects: int
    body_via_pipe: bool
    def __init__(self, method: _Optional[str] = ..., url: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., timeout_s: _Optional[float] = ..., follow_redirects: _Optional[bool] = ..., max_redirects: _Optional[int] = ..., body_via_pipe: _Optional[bool] = ...) -> None: ...

class HttpRequestPart(_message.Message):
    __slots__ = ("head", "body", "finish")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    head: HttpRequestHead
    body: bytes
    finish: bool
    def __init__(self, head: _Optional[_Union[HttpRequestHead, _Mapping]] = ..., body: _Optional[bytes] = ..., finish: _Optional[bool] = ...) -> None: ...

class HttpResponseHead(_message.Message):
    __slots__ = ("status", "reason", "headers", "url", "redirects", "body_ticket")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    REDIRECTS_FIELD_NUMBER: _ClassVar[int]
    BODY_TICKET_FIELD_NUMBER: _ClassVar[int]
    status: int
    reason: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    url: str
    redirects: int
    body_ticket: str
    def __init__(self, status: _Optional[int] = ..., reason: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., url: _Optional[str] = ..., redirects: _Optional[int] = ..., body_ticket: _Optional[str] = ...) -> None: ...

class HttpResponsePart(_message.Message):
    __slots__ = ("head", "body")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    head: HttpResponseHead
    body: bytes
    def __init__(self, head: _Optional[_Union[HttpResponseHead, _Mapping]] = ..., body: _Optional[bytes] = ...) -> None: ...

class TunnelPart(_message.Message):
    __slots__ = ("open", "data")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    open: TunnelOpen
    data: bytes
    def __init__(self, open: _Optional[_Union[TunnelOpen, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TunnelOpen(_message.Message):
    __slots__ = ("host", "port", "address")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    address: str
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ..., address: _Optional[str] = ...) -> None: ...

class OpRequest(_message.Message):
    __slots__ = ("id", "stat", "list_dir", "open_file", "make_dir", "delete", "rename", "read_file", "start", "finish")
    ID_FIELD_NUMBER: _ClassVar[int]
    STAT_FIELD_NUMBER: _ClassVar[int]
    LIST_DIR_FIELD_NUMBER: _ClassVar[int]
    OPEN_FILE_FIELD_NUMBER: _ClassVar[int]
    MAKE_DIR_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    READ_FILE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    id: int
    stat: StatRequest
    list_dir: ListDirRequest
    open_file: OpenFileRequest
    make_dir: MakeDirRequest
    delete: DeleteRequest
    rename: RenameRequest
    read_file: ReadFileRequest
    start: StartRequest
    finish: FinishRequest
    def __init__(self, id: _Optional[int] = ..., stat: _Optional[_Union[StatRequest, _Mapping]] = ..., list_dir: _Optional[_Union[ListDirRequest, _Mapping]] = ..., open_file: _Optional[_Union[OpenFileRequest, _Mapping]] = ..., make_dir: _Optional[_Union[MakeDirRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ..., rename: _Optional[_Union[RenameRequest, _Mapping]] = ..., read_file: _Optional[_Union[ReadFileRequest, _Mapping]] = ..., start: _Optional[_Union[StartRequest, _Mapping]] = ..., finish: _Optional[_Union[FinishRequest, _Mapping]] = ...) -> None: ...

class OpError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class OpReply(_message.Message):
    __slots__ = ("id", "error", "stat", "list_dir", "open_file", "make_dir", "delete", "rename", "read_file", "start", "finish")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STAT_FIELD_NUMBER: _ClassVar[int]
    LIST_DIR_FIELD_NUMBER: _ClassVar[int]
    OPEN_FILE_FIELD_NUMBER: _ClassVar[int]
    MAKE_DIR_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    RENAME_FIELD_NUMBER: _ClassVar[int]
    READ_FILE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: OpError
    stat: StatResponse
    list_dir: ListDirResponse
    open_file: OpenFileResponse
    make_dir: MakeDirResponse
    delete: DeleteResponse
    rename: RenameResponse
    read_file: FileChunk
    start: StartResponse
    finish: FinishResponse
    def __init__(self, id: _Optional[int] = ..., error: _Optional[_Union[OpError, _Mapping]] = ..., stat: _Optional[_Union[StatResponse, _Mapping]] = ..., list_dir: _Optional[_Union[ListDirResponse, _Mapping]] = ..., open_file: _Optional[_Union[OpenFileResponse, _Mapping]] = ..., make_dir: _Optional[_Union[MakeDirResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteResponse, _Mapping]] = ..., rename: _Optional[_Union[RenameResponse, _Mapping]] = ..., read_file: _Optional[_Union[FileChunk, _Mapping]] = ..., start: _Optional[_Union[StartResponse, _Mapping]] = ..., finish: _Optional[_Union[FinishResponse, _Mapping]] = ...) -> None: ...
