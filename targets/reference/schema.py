"""Message classes of the reference service, built from its .proto at start-up.

The .proto is compiled with grpcio-tools into a FileDescriptorSet and added to the default
descriptor pool, so no generated code (tied to one protobuf release) is committed. The same
FileDescriptorSet is handed to the harness, as a user would hand over theirs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from targets import operators

PACKAGE = "hipaagrpc.reference.v1"
SERVICE = f"{PACKAGE}.PatientRecords"
PROTO = "targets/reference/v1/patient_records.proto"


@functools.cache
def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The service's FileDescriptorSet with all imports, health.proto included."""
    root = Path(__file__).resolve().parents[2]
    return operators.descriptor_set(root / PROTO, root)


@functools.cache
def _register() -> None:
    pool = descriptor_pool.Default()
    for fd in descriptor_set().file:
        try:
            pool.FindFileByName(fd.name)
        except KeyError:
            pool.Add(fd)


def message(name: str) -> Any:
    """The message class for ``hipaagrpc.reference.v1.<name>`` (typed Any: built at run time)."""
    _register()
    desc = descriptor_pool.Default().FindMessageTypeByName(f"{PACKAGE}.{name}")
    return message_factory.GetMessageClass(desc)


def service_descriptor() -> Any:
    """The PatientRecords service descriptor."""
    _register()
    return descriptor_pool.Default().FindServiceByName(SERVICE)
