from google.protobuf import empty_pb2 as _empty_pb2
from nsm_forwarder.proto import connection_pb2 as _connection_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CrossConnectEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INITIAL_STATE_TRANSFER: _ClassVar[CrossConnectEventType]
    UPDATE: _ClassVar[CrossConnectEventType]
    DELETE: _ClassVar[CrossConnectEventType]
INITIAL_STATE_TRANSFER: CrossConnectEventType
UPDATE: CrossConnectEventType
DELETE: CrossConnectEventType

class CrossConnect(_message.Message):
    __slots__ = ("id", "payload", "source", "destination")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    payload: str
    source: _connection_pb2.Connection
    destination: _connection_pb2.Connection
    def __init__(self, id: _Optional[str] = ..., payload: _Optional[str] = ..., source: _Optional[_Union[_connection_pb2.Connection, _Mapping]] = ..., destination: _Optional[_Union[_connection_pb2.Connection, _Mapping]] = ...) -> None: ...

class Metrics(_message.Message):
    __slots__ = ("metrics",)
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, str]
    def __init__(self, metrics: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CrossConnectEvent(_message.Message):
    __slots__ = ("type", "cross_connects", "metrics")
    class CrossConnectsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: CrossConnect
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[CrossConnect, _Mapping]] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Metrics
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Metrics, _Mapping]] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CROSS_CONNECTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    type: CrossConnectEventType
    cross_connects: _containers.MessageMap[str, CrossConnect]
    metrics: _containers.MessageMap[str, Metrics]
    def __init__(self, type: _Optional[_Union[CrossConnectEventType, str]] = ..., cross_connects: _Optional[_Mapping[str, CrossConnect]] = ..., metrics: _Optional[_Mapping[str, Metrics]] = ...) -> None: ...
