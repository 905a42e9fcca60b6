"""A made-up lab-order service (``lab_orders.proto``), for judges' unit tests on wrapper shapes.

Its responses wrap their records (``GetLabOrderResponse{order}``,
``ListLabOrdersResponse{repeated orders, next_page_token}``, ``{data: {order}}``), its IDs
are int64 and its pages are sized by ``max_results``, ``pageSize`` or ``paging.limit``:
the shapes grpc-js and grpc-go services have, none of them the reference's.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.descriptors import MethodCatalogue, compile_protos

PROTO = Path(__file__).with_name("lab_orders.proto")
PKG = "acme.lab.v1"
SVC = f"/{PKG}.LabOrders"
GET, LIST, STREAM = f"{SVC}/GetLabOrder", f"{SVC}/ListLabOrders", f"{SVC}/StreamLabOrders"
EXPORT, FETCH, COUNT = f"{SVC}/ExportLabOrders", f"{SVC}/FetchLabOrder", f"{SVC}/CountLabOrders"
GET_RESULT, LIST_RESULTS = f"/{PKG}.Results/GetResult", f"/{PKG}.Results/ListResults"
RECORD = f"{PKG}.LabOrder"


@functools.cache
def catalogue() -> MethodCatalogue:
    """The service's descriptors, compiled once."""
    return compile_protos([PROTO], [])


@functools.cache
def reference() -> MethodCatalogue:
    """The bundled reference's descriptors, to show its shapes are read as before."""
    from targets.reference import schema

    return MethodCatalogue(schema.descriptor_set(), "reference")


def message(name: str) -> Any:
    """The message class ``acme.lab.v1.<name>``."""
    return catalogue().message_class(f"{PKG}.{name}")


def order(**fields: Any) -> Any:
    """A LabOrder record."""
    return message("LabOrder")(**fields)


def got(*orders: Any, **fields: Any) -> bytes:
    """A GetLabOrderResponse wrapping ``orders[0]`` (none: an empty wrapper)."""
    cls = message("GetLabOrderResponse")
    return (
        cls(order=orders[0], **fields).SerializeToString()
        if orders
        else cls(**fields).SerializeToString()
    )


def listed(*orders: Any, token: str = "") -> bytes:
    """A ListLabOrdersResponse page of ``orders``."""
    page = message("ListLabOrdersResponse")(orders=list(orders), next_page_token=token)
    data: bytes = page.SerializeToString()
    return data
