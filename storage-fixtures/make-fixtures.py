#!/usr/bin/env python3
"""Deterministically generate berth's storage test fixtures (stdlib only).

Outputs (relative to this script's directory):
  oci-multiarch/   OCI image layout: ref "multiarch" -> image index over
                   linux/amd64 + linux/arm64/v8; ref "amd64" -> amd64 manifest.
  blobs/small.bin  1000 bytes of deterministic pseudo-random data.
  blobs/empty.json the 2-byte OCI empty descriptor content "{}".

Determinism: tar headers are built with fixed mtime/uid/gid/mode and sorted
entries; the gzip stream is written by hand (mtime 0, OS=255, deflate *stored*
blocks) so its bytes do not depend on the zlib implementation/version
(zlib vs zlib-ng) or the Python version. JSON is compact with fixed key order.
Re-running always produces byte-identical files.
"""
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT = os.path.join(HERE, "oci-multiarch")
RAW = os.path.join(HERE, "blobs")

EPOCH = 1704067200  # 2024-01-01T00:00:00Z, used for tar mtimes
CREATED = "2024-01-01T00:00:00Z"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def make_tar(files):
    """files: dict path -> (mode, bytes). Returns an uncompressed ustar archive."""
    out = bytearray()
    for name in sorted(files):
        mode, data = files[name]
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mode = mode
        ti.mtime = EPOCH
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.type = tarfile.REGTYPE
        out += ti.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
        out += data
        out += b"\0" * (-len(data) % 512)
    out += b"\0" * 1024  # end-of-archive marker (two zero blocks)
    return bytes(out)


def make_gzip(data):
    """RFC 1952 gzip with deflate stored blocks: fully implementation-independent."""
    out = bytearray(b"\x1f\x8b\x08\x00" + b"\0\0\0\0" + b"\x00\xff")  # no flags, mtime 0, XFL 0, OS unknown
    chunks = [data[i:i + 65535] for i in range(0, len(data), 65535)] or [b""]
    for i, chunk in enumerate(chunks):
        final = 1 if i == len(chunks) - 1 else 0
        out += bytes([final]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    assert zlib.decompress(bytes(out), wbits=31) == data
    return bytes(out)


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobdir = os.path.join(root, "blobs", "sha256")
        os.makedirs(self.blobdir)

    def put(self, media_type, data, **extra):
        digest = sha256(data)
        with open(os.path.join(self.blobdir, digest.split(":", 1)[1]), "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
        desc.update(extra)
        return desc

    def write(self, name, data):
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)


def build_image(layout, arch, variant, files):
    tar = make_tar(files)
    layer = layout.put(MT_LAYER_GZ, make_gzip(tar))
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/"],
            "Cmd": ["/hello"],
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created": CREATED, "created_by": "berth storage-fixtures/make-fixtures.py"}],
    }
    if variant:
        config["variant"] = variant
    config_desc = layout.put(MT_CONFIG, canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config_desc,
        "layers": [layer],
    }
    platform = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    desc = layout.put(MT_MANIFEST, canonical_json(manifest), platform=platform)
    return desc, config_desc, layer, sha256(tar)


def main():
    with open(os.path.join(HERE, "hello-amd64"), "rb") as f:
        hello = f.read()
    if not hello.startswith(b"\x7fELF"):
        sys.exit("hello-amd64 is not an ELF binary")

    if os.path.exists(LAYOUT):
        shutil.rmtree(LAYOUT)
    layout = Layout(LAYOUT)

    summary = []
    amd64, *rest = build_image(layout, "amd64", None, {"hello": (0o755, hello)})
    summary.append(("linux/amd64", amd64, *rest))
    arm_text = b"hello from berth (linux/arm64 variant; this is a text file, not a binary)\n"
    arm64, *rest = build_image(layout, "arm64", "v8", {
        "hello": (0o755, b"#!/bin/sh\n# arm64 placeholder: " + arm_text),
        "hello.txt": (0o644, arm_text),
    })
    summary.append(("linux/arm64/v8", arm64, *rest))

    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [amd64, arm64]}
    index_desc = layout.put(MT_INDEX, canonical_json(index))

    top = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            dict(index_desc, annotations={REF_NAME: "multiarch"}),
            dict(amd64, annotations={REF_NAME: "amd64"}),
        ],
    }
    layout.write("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
    layout.write("index.json", canonical_json(top))

    # Raw blobs for API tests.
    os.makedirs(RAW, exist_ok=True)
    small = bytearray()
    counter = 0
    while len(small) < 1000:
        small += hashlib.sha256(b"berth small.bin %d" % counter).digest()
        counter += 1
    raw = {"small.bin": bytes(small[:1000]), "empty.json": b"{}"}
    for name, data in raw.items():
        with open(os.path.join(RAW, name), "wb") as f:
            f.write(data)

    print("index (multiarch)   %s  %d bytes" % (index_desc["digest"], index_desc["size"]))
    for plat, man, cfg, layer, diff in summary:
        print("%-15s manifest %s  %d bytes" % (plat, man["digest"], man["size"]))
        print("%-15s config   %s  %d bytes" % ("", cfg["digest"], cfg["size"]))
        print("%-15s layer    %s  %d bytes" % ("", layer["digest"], layer["size"]))
        print("%-15s diff_id  %s" % ("", diff))
    for name, data in raw.items():
        print("blobs/%-13s %s  %d bytes" % (name, sha256(data), len(data)))


if __name__ == "__main__":
    main()
