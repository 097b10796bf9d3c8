"""Generates the sqlgate stubs under ``sqlgate_client/_proto`` from ``proto/``.

The stubs live inside the package's own namespace so that installing the
client never adds or shadows a top-level ``sqlgate`` or ``google`` package:
the generated imports of ``sqlgate.v1`` are rewritten to
``sqlgate_client._proto.sqlgate.v1``. ``google.rpc`` (Status, ErrorInfo…)
comes from the installed ``googleapis-common-protos``, the copy every other
Python gRPC library shares, so it is not generated here.

Run from anywhere with grpcio-tools installed::

    python clients/python/generate.py          # rewrite the stubs
    python clients/python/generate.py --check  # fail if they are stale

The stubs are committed, so that ``pip install ./clients/python`` needs
nothing but PyPI's runtime packages.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "sqlgate_client" / "_proto"
PROTOS = ["sqlgate/v1/value.proto", "sqlgate/v1/query.proto", "sqlgate/v1/session.proto", "sqlgate/v1/admin.proto"]
PREFIX = "sqlgate_client._proto"


def generate(into: Path) -> None:
    """Runs protoc on the sqlgate protos and rewrites their imports."""
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in [into / "sqlgate", into / "sqlgate" / "v1"]:
        (package / "__init__.py").write_text("")
    (into / "__init__.py").write_text('"""Generated stubs; see clients/python/generate.py."""\n')
    for path in (into / "sqlgate" / "v1").glob("*.py*"):
        text = path.read_text()
        text = re.sub(r"^from sqlgate\.v1 import", f"from {PREFIX}.sqlgate.v1 import", text, flags=re.M)
        text = re.sub(r"^import sqlgate\.v1\.", f"import {PREFIX}.sqlgate.v1.", text, flags=re.M)
        text = re.sub(r"\bsqlgate\.v1\.(\w+_pb2)\b", rf"{PREFIX}.sqlgate.v1.\1", text) if path.suffix == ".pyi" else text
        path.write_text(text)


def same_tree(a: Path, b: Path) -> bool:
    """Whether two directories hold the same files with the same bytes."""
    compared = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, compared.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(a / d, b / d) for d in compared.common_dirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        fresh.mkdir()
        generate(fresh)
        if check:
            if not OUT.exists() or not same_tree(fresh, OUT):
                print("clients/python stubs are stale: run python clients/python/generate.py", file=sys.stderr)
                return 1
            return 0
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(fresh, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
