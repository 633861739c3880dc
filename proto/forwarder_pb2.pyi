from google.protobuf import empty_pb2 as _empty_pb2
from nsm_forwarder.proto import connection_pb2 as _connection_pb2
from nsm_forwarder.proto import crossconnect_pb2 as _crossconnect_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MechanismUpdate(_message.Message):
    __slots__ = ("remote_mechanisms", "local_mechanisms")
    REMOTE_MECHANISMS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_MECHANISMS_FIELD_NUMBER: _ClassVar[int]
    remote_mechanisms: _containers.RepeatedCompositeFieldContainer[_connection_pb2.Mechanism]
    local_mechanisms: _containers.RepeatedCompositeFieldContainer[_connection_pb2.Mechanism]
    def __init__(self, remote_mechanisms: _Optional[_Iterable[_Union[_connection_pb2.Mechanism, _Mapping]]] = ..., local_mechanisms: _Optional[_Iterable[_Union[_connection_pb2.Mechanism, _Mapping]]] = ...) -> None: ...
