from . import capabilities_pb2 as _capabilities_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterToolRequest(_message.Message):
    __slots__ = ("manifest",)
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    manifest: _capabilities_pb2.Manifest
    def __init__(self, manifest: _Optional[_Union[_capabilities_pb2.Manifest, _Mapping]] = ...) -> None: ...

class ToolInfo(_message.Message):
    __slots__ = ("name", "image", "image_id", "manifest", "registered_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    image: str
    image_id: str
    manifest: _capabilities_pb2.Manifest
    registered_at: str
    def __init__(self, name: _Optional[str] = ..., image: _Optional[str] = ..., image_id: _Optional[str] = ..., manifest: _Optional[_Union[_capabilities_pb2.Manifest, _Mapping]] = ..., registered_at: _Optional[str] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolInfo]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolInfo, _Mapping]]] = ...) -> None: ...

class MintTokenRequest(_message.Message):
    __slots__ = ("grant", "ttl_s")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    grant: _capabilities_pb2.Grant
    ttl_s: int
    def __init__(self, grant: _Optional[_Union[_capabilities_pb2.Grant, _Mapping]] = ..., ttl_s: _Optional[int] = ...) -> None: ...

class MintTokenResponse(_message.Message):
    __slots__ = ("token", "token_id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_id: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., token_id: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("tool", "input_json", "token")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    tool: str
    input_json: str
    token: str
    def __init__(self, tool: _Optional[str] = ..., input_json: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class InvokeStarted(_message.Message):
    __slots__ = ("invocation_id", "container_id", "launch_ms")
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_MS_FIELD_NUMBER: _ClassVar[int]
    invocation_id: str
    container_id: str
    launch_ms: float
    def __init__(self, invocation_id: _Optional[str] = ..., container_id: _Optional[str] = ..., launch_ms: _Optional[float] = ...) -> None: ...

class ToolOutput(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ToolError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class InvokeResult(_message.Message):
    __slots__ = ("ok", "output_json", "error", "duration_ms", "exit_code")
    OK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    output_json: str
    error: ToolError
    duration_ms: float
    exit_code: int
    def __init__(self, ok: _Optional[bool] = ..., output_json: _Optional[str] = ..., error: _Optional[_Union[ToolError, _Mapping]] = ..., duration_ms: _Optional[float] = ..., exit_code: _Optional[int] = ...) -> None: ...

class InvokeEvent(_message.Message):
    __slots__ = ("started", "output", "result")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    started: InvokeStarted
    output: ToolOutput
    result: InvokeResult
    def __init__(self, started: _Optional[_Union[InvokeStarted, _Mapping]] = ..., output: _Optional[_Union[ToolOutput, _Mapping]] = ..., result: _Optional[_Union[InvokeResult, _Mapping]] = ...) -> None: ...
