"""The retval numbers the fake answers with.

The numbers and names are VPP's (``foreach_vnet_error`` in ``src/vnet/error.h`` of v26.06,
which ``src/vnet/api_errno.h`` turns into ``VNET_API_ERROR_<NAME>``). Only the codes that some
handler of the fake can produce, plus a few neighbours that tests like to name, are listed.
"""

from __future__ import annotations

from enum import IntEnum


class Retval(IntEnum):
    """``VNET_API_ERROR_<name>`` = value, as in VPP v26.06."""

    OK = 0
    UNSPECIFIED = -1
    INVALID_SW_IF_INDEX = -2
    NO_SUCH_FIB = -3
    NO_SUCH_ENTRY = -6
    INVALID_VALUE = -7
    INVALID_VALUE_2 = -8
    UNIMPLEMENTED = -9
    INVALID_SW_IF_INDEX_2 = -10
    SYSCALL_ERROR_1 = -11
    SYSCALL_ERROR_2 = -12
    SYSCALL_ERROR_3 = -13
    SYSCALL_ERROR_4 = -14
    NO_PATHS_IN_ROUTE = -52
    NO_MATCHING_INTERFACE = -54
    ADDRESS_LENGTH_MISMATCH = -59
    ADDRESS_NOT_FOUND_FOR_INTERFACE = -60
    ADDRESS_NOT_DELETABLE = -61
    NO_SUCH_TABLE = -65
    SUBIF_ALREADY_EXISTS = -68
    INVALID_INTERFACE = -71
    INVALID_ARGUMENT = -73
    UNEXPECTED_INTF_STATE = -74
    TUNNEL_EXIST = -75
    INVALID_DECAP_NEXT = -76
    IF_ALREADY_EXISTS = -79
    SAME_SRC_DST = -82
    ADDRESS_IN_USE = -105
    ENTRY_ALREADY_EXISTS = -116
    UNSUPPORTED = -126
    DUPLICATE_IF_ADDRESS = -127
    INIT_FAILED = -144
    NETLINK_ERROR = -145
    INSTANCE_IN_USE = -147
    NON_ETHERNET = -151
    LIMIT_EXCEEDED = -162
    INVALID_PREFIX_LENGTH = -171


def retval_name(value: int) -> str:
    """``"VNET_API_ERROR_<NAME>"`` for a known value, else the number as text."""
    try:
        return "VNET_API_ERROR_" + Retval(value).name
    except ValueError:
        return str(value)
