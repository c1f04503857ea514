from . import capabilities_pb2 as _capabilities_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterToolRequest(_message.Message):
    __slots__ = ("manifest", "signature_json")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_JSON_FIELD_NUMBER: _ClassVar[int]
    manifest: _capabilities_pb2.Manifest
    signature_json: str
    def __init__(self, manifest: _Optional[_Union[_capabilities_pb2.Manifest, _Mapping]] = ..., signature_json: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("token", "token_id", "expires_at", "narrowed")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    NARROWED_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_id: str
    expires_at: int
    narrowed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[str] = ..., token_id: _Optional[str] = ..., expires_at: _Optional[int] = ..., narrowed: _Optional[_Iterable[str]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("token", "tool", "invoke", "file", "net", "pay")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INVOKE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    PAY_FIELD_NUMBER: _ClassVar[int]
    token: str
    tool: str
    invoke: ExplainInvoke
    file: ExplainFile
    net: ExplainNet
    pay: ExplainPay
    def __init__(self, token: _Optional[str] = ..., tool: _Optional[str] = ..., invoke: _Optional[_Union[ExplainInvoke, _Mapping]] = ..., file: _Optional[_Union[ExplainFile, _Mapping]] = ..., net: _Optional[_Union[ExplainNet, _Mapping]] = ..., pay: _Optional[_Union[ExplainPay, _Mapping]] = ...) -> None: ...

class ExplainInvoke(_message.Message):
    __slots__ = ("input_json",)
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    input_json: str
    def __init__(self, input_json: _Optional[str] = ...) -> None: ...

class ExplainFile(_message.Message):
    __slots__ = ("workspace", "path", "op")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    path: str
    op: _capabilities_pb2.FileOp
    def __init__(self, workspace: _Optional[str] = ..., path: _Optional[str] = ..., op: _Optional[_Union[_capabilities_pb2.FileOp, str]] = ...) -> None: ...

class ExplainNet(_message.Message):
    __slots__ = ("method", "url")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    method: str
    url: str
    def __init__(self, method: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class ExplainPay(_message.Message):
    __slots__ = ("payee", "amount", "currency")
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    payee: str
    amount: int
    currency: str
    def __init__(self, payee: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class BudgetState(_message.Message):
    __slots__ = ("key", "kind", "used", "cap")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    key: str
    kind: str
    used: int
    cap: int
    def __init__(self, key: _Optional[str] = ..., kind: _Optional[str] = ..., used: _Optional[int] = ..., cap: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("allowed", "reason", "rule", "needs_approval", "budgets", "authority", "token_id", "secrets")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    NEEDS_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    rule: str
    needs_approval: bool
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetState]
    authority: _containers.RepeatedScalarFieldContainer[str]
    token_id: str
    secrets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., rule: _Optional[str] = ..., needs_approval: _Optional[bool] = ..., budgets: _Optional[_Iterable[_Union[BudgetState, _Mapping]]] = ..., authority: _Optional[_Iterable[str]] = ..., token_id: _Optional[str] = ..., secrets: _Optional[_Iterable[str]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id", "reason")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    reason: str
    def __init__(self, token_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key_id", "verifying_key_ids")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFYING_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    verifying_key_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., verifying_key_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("tool", "input_json", "token", "capture_output")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    tool: str
    input_json: str
    token: str
    capture_output: bool
    def __init__(self, tool: _Optional[str] = ..., input_json: _Optional[str] = ..., token: _Optional[str] = ..., capture_output: _Optional[bool] = ...) -> None: ...

class InvokeStarted(_message.Message):
    __slots__ = ("invocation_id", "container_id", "launch_ms", "warm")
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_MS_FIELD_NUMBER: _ClassVar[int]
    WARM_FIELD_NUMBER: _ClassVar[int]
    invocation_id: str
    container_id: str
    launch_ms: float
    warm: bool
    def __init__(self, invocation_id: _Optional[str] = ..., container_id: _Optional[str] = ..., launch_ms: _Optional[float] = ..., warm: _Optional[bool] = ...) -> None: ...

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

class ApprovalInfo(_message.Message):
    __slots__ = ("id", "status", "payee", "amount", "currency", "idempotency_key", "memo", "tool", "invocation_id", "grant_id", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    INVOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    payee: str
    amount: int
    currency: str
    idempotency_key: str
    memo: str
    tool: str
    invocation_id: str
    grant_id: str
    expires_at: int
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., payee: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., memo: _Optional[str] = ..., tool: _Optional[str] = ..., invocation_id: _Optional[str] = ..., grant_id: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals",)
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[ApprovalInfo]
    def __init__(self, approvals: _Optional[_Iterable[_Union[ApprovalInfo, _Mapping]]] = ...) -> None: ...

class ApproveRequest(_message.Message):
    __slots__ = ("id", "amount", "payee", "currency")
    ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    amount: int
    payee: str
    currency: str
    def __init__(self, id: _Optional[str] = ..., amount: _Optional[int] = ..., payee: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class DenyApprovalRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SeedAccountRequest(_message.Message):
    __slots__ = ("name", "amount", "currency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    amount: int
    currency: str
    def __init__(self, name: _Optional[str] = ..., amount: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class AccountInfo(_message.Message):
    __slots__ = ("name", "balance", "currency")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    balance: int
    currency: str
    def __init__(self, name: _Optional[str] = ..., balance: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts",)
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[AccountInfo]
    def __init__(self, accounts: _Optional[_Iterable[_Union[AccountInfo, _Mapping]]] = ...) -> None: ...

class PutSecretRequest(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ("name", "created", "length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    created: str
    length: int
    def __init__(self, name: _Optional[str] = ..., created: _Optional[str] = ..., length: _Optional[int] = ...) -> None: ...

class ListSecretsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class DeleteSecretRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
