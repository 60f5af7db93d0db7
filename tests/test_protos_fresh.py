"""The committed generated code in authz/gen is what the pinned protoc makes of protos/."""

from __future__ import annotations

from pathlib import Path

from authz.gen.distill_guard.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.protogen import GEN_PACKAGE, REPO_ROOT, generate

REGENERATE = (
    "authz/gen is stale: regenerate it with `.venv/bin/python -m authz.protogen` "
    "(grpcio-tools==1.85.1, as pinned in pyproject.toml) and commit the result"
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """Regenerating into a temporary directory yields byte-identical files, and no others."""
    generate(tmp_path)
    fresh = _tree(tmp_path / GEN_PACKAGE)
    committed = _tree(REPO_ROOT / GEN_PACKAGE)
    assert sorted(fresh) == sorted(committed), REGENERATE
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"{REGENERATE}; differing: {', '.join(stale)}"


def test_generated_modules_live_in_the_authz_gen_package() -> None:
    """The stubs import their messages from authz.gen, and the wire names keep the proto package."""
    source = Path(admin_pb2_grpc.__file__).read_text()
    assert "from authz.gen.distill_guard.admin.v1 import admin_pb2 as " in source
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    assert service.full_name == "distill_guard.admin.v1.Admin"
    assert [m.name for m in service.methods] == ["CreateKey", "RevokeKey", "ListKeys", "GetAccount"]
