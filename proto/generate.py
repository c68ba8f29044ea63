"""Generate the Python code of the vpp.v1 protobuf contracts.

Usage: python proto/generate.py [OUTPUT_ROOT]   (default: the repository root, writing vpp/v1/*)

The .proto files under proto/ are the source of truth; tests/test_proto_drift.py regenerates into a
temporary folder and compares byte for byte with the committed vpp/v1/ package.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def proto_files() -> list[Path]:
    """Every .proto file of the contracts, sorted for a stable build."""
    return sorted((PROTO_ROOT / "vpp").rglob("*.proto"))


def generate(output_root: Path) -> list[Path]:
    """Run protoc (grpcio-tools) with the grpc and mypy plugins; return the files written."""
    from grpc_tools import protoc

    plugin_dir = Path(sys.executable).parent
    well_known = Path(protoc.__file__).parent / "_proto"
    out_pkg = output_root / "vpp" / "v1"
    out_pkg.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={output_root}",
        f"--grpc_python_out={output_root}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out=quiet:{output_root}",
        f"--mypy_grpc_out=quiet:{output_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for pkg in (output_root / "vpp", out_pkg):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf code of the vpp.v1 contracts (do not edit)."""\n')
    (out_pkg / "py.typed").write_text("")
    return sorted(p for p in (output_root / "vpp").rglob("*") if p.is_file())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    if target == REPO_ROOT:
        shutil.rmtree(REPO_ROOT / "vpp" / "v1", ignore_errors=True)
    for path in generate(target):
        print(path)
