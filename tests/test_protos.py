"""The wire contract: committed stubs are fresh and installed, the .proto follows buf STANDARD
style with a comment on every element, and its messages stay in step with the core's records."""

from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
GEN_PROTOS = ROOT / "scripts" / "gen_protos"
PACKAGE_DIR = Path(str(importlib.resources.files("vmxsim.v1")))
"""The installed vmxsim.v1 package: the .proto files ship next to their stubs."""


def _run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


# -- generated stubs ------------------------------------------------------------------------


def test_committed_stubs_are_fresh() -> None:
    result = _run(sys.executable, GEN_PROTOS, "--check")
    assert result.returncode == 0, "run scripts/gen_protos\n" + result.stderr


def test_check_reports_stale_and_leftover_stubs(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    stubs = tmp_path / "protos" / "vmxsim" / "v1"
    (stubs / "vmxsim_pb2.pyi").write_text("# edited by hand\n")
    (stubs / "gone_pb2.py").write_text("")
    result = _run(sys.executable, GEN_PROTOS, "--check", "--root", tmp_path)
    assert result.returncode == 1
    assert "stale:" in result.stderr and "vmxsim_pb2.pyi" in result.stderr
    assert "no .proto generates:" in result.stderr and "gone_pb2.py" in result.stderr


def test_stubs_import_from_the_installed_package() -> None:
    code = (
        "from vmxsim.v1 import vmxsim_pb2, vmxsim_pb2_grpc;"
        "print(vmxsim_pb2.DESCRIPTOR.package, vmxsim_pb2_grpc.VcpuServiceStub.__name__,"
        " vmxsim_pb2_grpc.add_VcpuServiceServicer_to_server.__name__)"
    )
    # From "/", so nothing but the installed distribution can provide vmxsim.
    result = _run(sys.executable, "-c", code, cwd=Path("/"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "vmxsim.v1",
        "VcpuServiceStub",
        "add_VcpuServiceServicer_to_server",
    ]


def test_drive_and_replay_are_bidi_streams_and_the_rest_unary() -> None:
    from vmxsim.v1 import vmxsim_pb2

    service = descriptor_pb2.ServiceDescriptorProto()
    vmxsim_pb2.DESCRIPTOR.services_by_name["VcpuService"].CopyToProto(service)
    streaming = {m.name for m in service.method if m.client_streaming and m.server_streaming}
    one_sided = [m.name for m in service.method if m.client_streaming != m.server_streaming]
    assert streaming == {"Drive", "Replay"}
    assert one_sided == []


def test_dependency_floors_cover_the_generated_stubs() -> None:
    floors = {}
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]:
        if match := re.fullmatch(r"([\w-]+)>=([\d.]+)", requirement.replace(" ", "")):
            floors[match[1]] = tuple(int(n) for n in match[2].split("."))
    stubs = ROOT / "protos" / "vmxsim" / "v1"
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", _read(stubs, "_pb2_grpc.py"))
    gencode = re.search(r"Protobuf Python Version: ([\d.]+)", _read(stubs, "_pb2.py"))
    assert grpc_version and gencode
    assert floors["grpcio"] >= tuple(int(n) for n in grpc_version[1].split("."))
    assert floors["protobuf"] >= tuple(int(n) for n in gencode[1].split("."))


def _read(directory: Path, suffix: str) -> str:
    return "".join(p.read_text() for p in sorted(directory.glob(f"*{suffix}")))


# -- the .proto ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proto_files(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[descriptor_pb2.FileDescriptorProto]:
    """The installed .proto files, compiled with their comments (source info)."""
    out = tmp_path_factory.mktemp("descriptors") / "vmxsim.pb"
    import_root = PACKAGE_DIR.parents[1]
    sources = sorted(str(p.relative_to(import_root)) for p in PACKAGE_DIR.glob("*.proto"))
    assert sources, f"no .proto files in {PACKAGE_DIR}"
    result = _run(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{import_root}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *sources,
    )
    assert result.returncode == 0, result.stderr
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def _elements(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(kind and name, source-info path) of every commentable element of a file."""
    F = descriptor_pb2.FileDescriptorProto
    M = descriptor_pb2.DescriptorProto
    E = descriptor_pb2.EnumDescriptorProto
    S = descriptor_pb2.ServiceDescriptorProto

    def enum(
        e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str
    ) -> Iterator[tuple[str, tuple[int, ...]]]:
        yield f"enum {scope}{e.name}", path
        for i, v in enumerate(e.value):
            yield f"enum value {scope}{e.name}.{v.name}", (*path, E.VALUE_FIELD_NUMBER, i)

    def message(
        m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str
    ) -> Iterator[tuple[str, tuple[int, ...]]]:
        if m.options.map_entry:  # synthesized for map<K, V>; the map field carries the comment
            return
        name = f"{scope}{m.name}"
        yield f"message {name}", path
        for i, f in enumerate(m.field):
            yield f"field {name}.{f.name}", (*path, M.FIELD_FIELD_NUMBER, i)
        real_oneofs = {f.oneof_index for f in m.field if f.HasField("oneof_index")}
        real_oneofs -= {f.oneof_index for f in m.field if f.proto3_optional}
        for i in sorted(real_oneofs):
            yield f"oneof {name}.{m.oneof_decl[i].name}", (*path, M.ONEOF_DECL_FIELD_NUMBER, i)
        for i, nested in enumerate(m.nested_type):
            yield from message(nested, (*path, M.NESTED_TYPE_FIELD_NUMBER, i), f"{name}.")
        for i, e in enumerate(m.enum_type):
            yield from enum(e, (*path, M.ENUM_TYPE_FIELD_NUMBER, i), f"{name}.")

    for i, m in enumerate(file.message_type):
        yield from message(m, (F.MESSAGE_TYPE_FIELD_NUMBER, i), "")
    for i, e in enumerate(file.enum_type):
        yield from enum(e, (F.ENUM_TYPE_FIELD_NUMBER, i), "")
    for i, s in enumerate(file.service):
        yield f"service {s.name}", (F.SERVICE_FIELD_NUMBER, i)
        for j, method in enumerate(s.method):
            yield (
                f"rpc {s.name}.{method.name}",
                (F.SERVICE_FIELD_NUMBER, i, S.METHOD_FIELD_NUMBER, j),
            )


def test_every_element_has_a_leading_comment(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    missing = []
    for file in proto_files:
        comments = {
            tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
        }
        missing += [
            f"{file.name}: {what}" for what, path in _elements(file) if not comments.get(path)
        ]
    assert not missing, "no leading comment:\n" + "\n".join(missing)


def test_every_enum_zero_value_is_unspecified(
    proto_files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    enums = [e for f in proto_files for e in f.enum_type]
    enums += [e for f in proto_files for m in f.message_type for e in m.enum_type]
    assert enums
    for e in enums:
        assert e.value[0].number == 0, e.name
        assert e.value[0].name.endswith("_UNSPECIFIED"), e.name


def test_buf_lint_and_format() -> None:
    buf = shutil.which("buf") or shutil.which("buf", path=str(Path(sys.executable).parent))
    if buf is None:
        pytest.skip("buf not installed (PyPI package buf-bin ships it)")
    lint = _run(buf, "lint", "protos")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run(buf, "format", "--diff", "--exit-code", "protos")
    assert fmt.returncode == 0, "run `buf format -w protos`\n" + fmt.stdout + fmt.stderr


# -- in step with the core --------------------------------------------------------------------


def test_exit_batch_has_one_packed_column_per_exit_record_field() -> None:
    from vmxsim.v1 import vmxsim_pb2

    record = vmxsim_pb2.ExitRecord.DESCRIPTOR
    batch = vmxsim_pb2.ExitBatch.DESCRIPTOR
    columns = {f.name: f for f in batch.fields if f.name != "sequence"}
    names = [f.name for f in record.fields]
    assert list(columns) == names + [f"{name}_packed" for name in names]
    for field in record.fields:
        assert columns[field.name].is_repeated, field.name
        assert columns[field.name].type == field.type, field.name
        assert columns[field.name].is_packed, field.name
        packed = columns[f"{field.name}_packed"]  # the same column as raw 8-byte values
        assert packed.type == packed.TYPE_BYTES and not packed.is_repeated, packed.name


def test_exit_record_and_capabilities_name_core_members() -> None:
    import dataclasses

    from vmxsim.v1 import vmxsim_pb2
    from vmxsim_server.vmx import Capabilities
    from vmxsim_server.vmx.records import ExitRecord

    # vmx_msrs is every capability again, as the IA32_VMX_* MSR values a processor reports
    wire_only = {"vmx_msrs"}
    for message, core in (
        (vmxsim_pb2.ExitRecord, ExitRecord),
        (vmxsim_pb2.Capabilities, Capabilities),
    ):
        members = {f.name for f in dataclasses.fields(core)}
        names = {f.name for f in message.DESCRIPTOR.fields} - wire_only
        assert names <= members, message.DESCRIPTOR.name
    # "Unset = default" must be distinguishable from 0/false for every capability.
    fields = vmxsim_pb2.Capabilities.DESCRIPTOR.fields
    assert all(f.has_presence for f in fields if f.name not in wire_only)


def test_outcome_results_match_the_core_results() -> None:
    from vmxsim.v1 import vmxsim_pb2
    from vmxsim_server.vmx.vcpu import Result

    names = set(vmxsim_pb2.OutcomeResult.keys()) - {"OUTCOME_RESULT_UNSPECIFIED"}
    assert names == {f"OUTCOME_RESULT_{r.name}" for r in Result}
