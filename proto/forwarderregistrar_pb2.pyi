from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ForwarderRegistrationRequest(_message.Message):
    __slots__ = ("forwarder_name", "forwarder_socket")
    FORWARDER_NAME_FIELD_NUMBER: _ClassVar[int]
    FORWARDER_SOCKET_FIELD_NUMBER: _ClassVar[int]
    forwarder_name: str
    forwarder_socket: str
    def __init__(self, forwarder_name: _Optional[str] = ..., forwarder_socket: _Optional[str] = ...) -> None: ...

class ForwarderRegistrationReply(_message.Message):
    __slots__ = ("registered",)
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    registered: bool
    def __init__(self, registered: _Optional[bool] = ...) -> None: ...

class ForwarderUnRegistrationRequest(_message.Message):
    __slots__ = ("forwarder_name",)
    FORWARDER_NAME_FIELD_NUMBER: _ClassVar[int]
    forwarder_name: str
    def __init__(self, forwarder_name: _Optional[str] = ...) -> None: ...

class ForwarderUnRegistrationReply(_message.Message):
    __slots__ = ("un_registered",)
    UN_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    un_registered: bool
    def __init__(self, un_registered: _Optional[bool] = ...) -> None: ...
