#!/usr/bin/env python3
"""Turn the built shared library into a loadable DuckDB extension file.

DuckDB only loads a file that ends with a 512-byte metadata block, preceded by
a 22-byte WebAssembly custom-section header:

  * 0x00, ULEB128(531), ULEB128(16), b"duckdb_signature", ULEB128(512)
  * eight 32-byte NUL-padded ASCII fields, in this order: three empty fields,
    ABI type, extension version, DuckDB (C API) version, platform, magic "4"
  * 256 bytes of signature (zeros: an unsigned extension)

Usage: append_footer.py [--lib PATH] [--out PATH] [--platform NAME]
                        [--extension-version V] [--duckdb-version V] [--abi ABI]
Defaults: target/release/liblmm.{so,dylib} (lmm.dll on Windows) ->
build/release/lmm.duckdb_extension, platform of this machine, version from
Cargo.toml, C API v1.5.6, ABI C_STRUCT.
"""

import argparse
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSION_NAME = "lmm"
C_API_VERSION = "v1.5.6"  # must match C_API_VERSION in src/ext/mod.rs
ABI = "C_STRUCT"
MAGIC = "4"
FIELD_SIZE = 32
SIGNATURE_SIZE = 256


def uleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > FIELD_SIZE:
        sys.exit(f"footer field too long ({len(raw)} > {FIELD_SIZE} bytes): {text!r}")
    return raw.ljust(FIELD_SIZE, b"\0")


def footer(abi: str, extension_version: str, duckdb_version: str, platform_name: str) -> bytes:
    name = b"duckdb_signature"
    payload_size = 8 * FIELD_SIZE + SIGNATURE_SIZE  # 512
    header = (
        b"\x00"
        + uleb128(len(uleb128(len(name))) + len(name) + len(uleb128(payload_size)) + payload_size)
        + uleb128(len(name))
        + name
        + uleb128(payload_size)
    )
    assert len(header) == 22, len(header)
    fields = [
        field(""),
        field(""),
        field(""),
        field(abi),
        field(extension_version),
        field(duckdb_version),
        field(platform_name),
        field(MAGIC),
    ]
    return header + b"".join(fields) + b"\0" * SIGNATURE_SIZE


def detect_platform() -> str:
    system = platform.system().lower()
    machine = platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
    }.get(machine)
    if arch is None:
        sys.exit(f"unknown machine architecture {machine!r}; pass --platform")
    if system == "linux":
        # musl builds would be linux_<arch>_musl: pass --platform for those.
        return f"linux_{arch}"
    if system == "darwin":
        return f"osx_{arch}"
    if system == "windows":
        return f"windows_{arch}"
    sys.exit(f"unknown operating system {system!r}; pass --platform")


def cargo_version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    try:
        import tomllib

        return tomllib.loads(text)["package"]["version"]
    except ImportError:
        m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
        if not m:
            sys.exit("cannot find the package version in Cargo.toml")
        return m.group(1)


def default_library() -> Path:
    system = platform.system().lower()
    name = {"darwin": "liblmm.dylib", "windows": "lmm.dll"}.get(system, "liblmm.so")
    return ROOT / "target" / "release" / name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "release" / f"{EXTENSION_NAME}.duckdb_extension")
    ap.add_argument("--platform", default=None)
    ap.add_argument("--extension-version", default=None)
    ap.add_argument("--duckdb-version", default=C_API_VERSION)
    ap.add_argument("--abi", default=ABI)
    args = ap.parse_args()

    lib = args.lib or default_library()
    if not lib.is_file():
        sys.exit(f"library not found: {lib} (run cargo build --release first)")
    platform_name = args.platform or detect_platform()
    version = args.extension_version or "v" + cargo_version()

    data = lib.read_bytes()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_bytes(data + footer(args.abi, version, args.duckdb_version, platform_name))
    tmp.replace(args.out)
    print(f"{args.out}: {len(data)} + 534 bytes (abi {args.abi}, version {version}, "
          f"duckdb {args.duckdb_version}, platform {platform_name})")


if __name__ == "__main__":
    main()
