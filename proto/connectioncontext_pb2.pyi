from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IpNeighbor(_message.Message):
    __slots__ = ("ip", "hardware_address")
    IP_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ip: str
    hardware_address: str
    def __init__(self, ip: _Optional[str] = ..., hardware_address: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class IpFamily(_message.Message):
    __slots__ = ("family",)
    class Family(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        IPV4: _ClassVar[IpFamily.Family]
        IPV6: _ClassVar[IpFamily.Family]
    IPV4: IpFamily.Family
    IPV6: IpFamily.Family
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    family: IpFamily.Family
    def __init__(self, family: _Optional[_Union[IpFamily.Family, str]] = ...) -> None: ...

class ExtraPrefixRequest(_message.Message):
    __slots__ = ("addr_family", "prefix_len", "required_number", "requested_number")
    ADDR_FAMILY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LEN_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_NUMBER_FIELD_NUMBER: _ClassVar[int]
    addr_family: IpFamily
    prefix_len: int
    required_number: int
    requested_number: int
    def __init__(self, addr_family: _Optional[_Union[IpFamily, _Mapping]] = ..., prefix_len: _Optional[int] = ..., required_number: _Optional[int] = ..., requested_number: _Optional[int] = ...) -> None: ...

class IPContext(_message.Message):
    __slots__ = ("src_ip_addr", "dst_ip_addr", "src_ip_required", "dst_ip_required", "src_routes", "dst_routes", "excluded_prefixes", "ip_neighbors", "extra_prefix_request", "extra_prefixes")
    SRC_IP_ADDR_FIELD_NUMBER: _ClassVar[int]
    DST_IP_ADDR_FIELD_NUMBER: _ClassVar[int]
    SRC_IP_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DST_IP_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SRC_ROUTES_FIELD_NUMBER: _ClassVar[int]
    DST_ROUTES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    IP_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_PREFIX_REQUEST_FIELD_NUMBER: _ClassVar[int]
    EXTRA_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    src_ip_addr: str
    dst_ip_addr: str
    src_ip_required: bool
    dst_ip_required: bool
    src_routes: _containers.RepeatedCompositeFieldContainer[Route]
    dst_routes: _containers.RepeatedCompositeFieldContainer[Route]
    excluded_prefixes: _containers.RepeatedScalarFieldContainer[str]
    ip_neighbors: _containers.RepeatedCompositeFieldContainer[IpNeighbor]
    extra_prefix_request: _containers.RepeatedCompositeFieldContainer[ExtraPrefixRequest]
    extra_prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, src_ip_addr: _Optional[str] = ..., dst_ip_addr: _Optional[str] = ..., src_ip_required: _Optional[bool] = ..., dst_ip_required: _Optional[bool] = ..., src_routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., dst_routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., excluded_prefixes: _Optional[_Iterable[str]] = ..., ip_neighbors: _Optional[_Iterable[_Union[IpNeighbor, _Mapping]]] = ..., extra_prefix_request: _Optional[_Iterable[_Union[ExtraPrefixRequest, _Mapping]]] = ..., extra_prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class DNSConfig(_message.Message):
    __slots__ = ("dns_server_ips", "search_domains")
    DNS_SERVER_IPS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    dns_server_ips: _containers.RepeatedScalarFieldContainer[str]
    search_domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dns_server_ips: _Optional[_Iterable[str]] = ..., search_domains: _Optional[_Iterable[str]] = ...) -> None: ...

class DNSContext(_message.Message):
    __slots__ = ("configs",)
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[DNSConfig]
    def __init__(self, configs: _Optional[_Iterable[_Union[DNSConfig, _Mapping]]] = ...) -> None: ...

class EthernetContext(_message.Message):
    __slots__ = ("src_mac", "dst_mac")
    SRC_MAC_FIELD_NUMBER: _ClassVar[int]
    DST_MAC_FIELD_NUMBER: _ClassVar[int]
    src_mac: str
    dst_mac: str
    def __init__(self, src_mac: _Optional[str] = ..., dst_mac: _Optional[str] = ...) -> None: ...

class ConnectionContext(_message.Message):
    __slots__ = ("ip_context", "dns_context", "ethernet_context", "extra_context")
    class ExtraContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IP_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DNS_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ETHERNET_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ip_context: IPContext
    dns_context: DNSContext
    ethernet_context: EthernetContext
    extra_context: _containers.ScalarMap[str, str]
    def __init__(self, ip_context: _Optional[_Union[IPContext, _Mapping]] = ..., dns_context: _Optional[_Union[DNSContext, _Mapping]] = ..., ethernet_context: _Optional[_Union[EthernetContext, _Mapping]] = ..., extra_context: _Optional[_Mapping[str, str]] = ...) -> None: ...
