"""Regenerate the Python protobuf modules in exchange_node/pb from proto/.

Usage: python proto/generate.py [OUTPUT_DIR]   (default: exchange_node/pb)

protoc writes imports as ``from exchange.v1 import x_pb2``; they are rewritten to the
package path so the generated code needs no sys.path tricks. The output is
deterministic, and tests/test_proto_generated.py checks that the committed modules are
exactly what this script produces.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "exchange_node" / "pb"
HEADER = "# Generated from proto/ by proto/generate.py. Do not edit.\n"


def generate(out_dir: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}", *sources]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "__init__.py").write_text(
            HEADER + '"""Generated protobuf modules of the exchange.v1 wire schema."""\n'
        )
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            text = re.sub(
                r"^from exchange\.v1 import",
                "from exchange_node.pb.exchange.v1 import",
                src.read_text(),
                flags=re.M,
            )
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(HEADER + text)
        for pkg in sorted({p.parent for p in out_dir.rglob("*_pb2.py")}):
            while pkg != out_dir:
                (pkg / "__init__.py").touch()
                pkg = pkg.parent


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
