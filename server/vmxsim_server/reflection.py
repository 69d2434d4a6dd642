"""Server reflection under both service names: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection (1.85) implements only ``grpc.reflection.v1alpha.ServerReflection``; clients
that speak only v1 (grpcurl 1.9+, Postman, grpc-js' reflection clients) got UNIMPLEMENTED. The
v1 protocol is the v1alpha one under a new package name: ``grpc/reflection/v1/reflection.proto``
has the same messages with the same field numbers (grpc/grpc ``doc/server-reflection.md``;
grpc-proto ``grpc/reflection/v1/reflection.proto``). So this module

- derives the v1 file descriptor from grpcio-reflection's v1alpha one (package and type names
  renamed, nothing else changed) and adds it to the default descriptor pool, so that reflection
  describes its own v1 service, and
- serves the v1 method with grpcio-reflection's v1alpha servicer: requests and responses are
  the same bytes on the wire, so v1alpha's message classes (de)serialize them.

No .proto is copied: the v1 file is computed from the one grpcio-reflection ships.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc import aio
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

__all__ = ["V1ALPHA_SERVICE_NAME", "V1_FILE", "V1_SERVICE_NAME", "enable_reflection"]

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
_V1ALPHA_PACKAGE = v1alpha_pb2.DESCRIPTOR.package  # grpc.reflection.v1alpha
_V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{_V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
"""The v1 file's name, as grpc-proto names it (clients may ask for it by file name)."""
_METHOD = "ServerReflectionInfo"


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection file: the v1alpha file with its package renamed."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = _V1_PACKAGE
    proto.ClearField("options")  # v1alpha's are deprecated=true and its java/go packages
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for method in proto.service[0].method:
        method.input_type = new + method.input_type.removeprefix(old)
        method.output_type = new + method.output_type.removeprefix(old)
    return proto


def _register_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """Add the v1 file to ``pool`` once (a second server in the process finds it there)."""
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(v1_file_descriptor())


def _v1_handler(servicer: reflection.aio.ReflectionServicer) -> grpc.GenericRpcHandler:
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {_METHOD: method})


def enable_reflection(service_names: tuple[str, ...], server: aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both."""
    pool = descriptor_pool.Default()
    _register_v1_file(pool)
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=pool)
    server.add_generic_rpc_handlers((_v1_handler(reflection.aio.ReflectionServicer(names, pool)),))
