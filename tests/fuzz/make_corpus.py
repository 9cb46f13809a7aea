#!/usr/bin/env python3
"""Writes the committed seed corpus, tests/fuzz/corpus/<target>/: a handful of small valid and
invalid inputs per fuzz target, in the input layout each check in fuzz_checks.hpp reads.
Store values get real checksums through libxxhash (ctypes). Rerun after changing a layout:
    python3 tests/fuzz/make_corpus.py"""
import ctypes
import ctypes.util
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

MAGIC_36 = struct.pack("<H", 3379) + b"\r\n"
MAGIC_37 = struct.pack("<H", 3394) + b"\r\n"
MAGIC_312 = struct.pack("<H", 3531) + b"\r\n"
MAGIC_313 = struct.pack("<H", 3571) + b"\r\n"


def minor_byte(minor):
    return bytes([minor - 6])  # fuzz_checks: minor = 6 + byte % 9


def cache_name():
    return {
        "plain": b"mod.cpython-312.pyc",
        "dotted_module": b"pkg.sub.cpython-311.pyc",
        "opt1": b"x.cpython-36.opt-1.pyc",
        "opt2": b"__init__.cpython-313.opt-2.pyc",
        "opt_max": b"m.pypy39.opt-999999999.pyc",
        "utf8": "caf\u00e9.cpython-313.pyc".encode(),
        "bad_no_tag": b"mod.pyc",
        "bad_empty_module": b".cpython-312.pyc",
        "bad_opt0": b"mod.cpython-312.opt-0.pyc",
        "bad_opt_leading_zero": b"mod.cpython-312.opt-01.pyc",
        "bad_opt_as_tag": b"mod.opt-1.pyc",
        "bad_slash": b"a/b.cpython-312.pyc",
        "bad_nul": b"m\x00.cpython-312.pyc",
        "bad_ext": b"mod.cpython-312.py",
        # Structured layout: u32 selector, level/byte, tag length, tag, module.
        "parts": b"\x01\x00\x00\x00\x02\x0bcpython-312mod",
    }


def pyc_header():
    ts = struct.pack("<III", 0, 1700000000, 1234)
    return {
        "312_timestamp": minor_byte(12) + MAGIC_312 + ts + b"\xe3body",
        "312_checked": minor_byte(12) + MAGIC_312 + struct.pack("<IQ", 3, 0x0123456789ABCDEF),
        "313_unchecked": minor_byte(13) + MAGIC_313 + struct.pack("<IQ", 1, 42),
        "37_flags2": minor_byte(7) + MAGIC_37 + struct.pack("<III", 2, 5, 6),
        "36_timestamp": minor_byte(6) + MAGIC_36 + struct.pack("<II", 1700000000, 99),
        "bad_flags4": minor_byte(12) + MAGIC_312 + struct.pack("<III", 4, 0, 0),
        "bad_short": minor_byte(12) + MAGIC_312 + b"\x00\x00",
        "empty": b"",
    }


def frame(body):
    return struct.pack("<I", len(body)) + body


def request(optimize, filename, source):
    return bytes([optimize]) + struct.pack("<I", len(filename)) + filename + source


def frame_protocol():
    big = b"\x01"  # odd first byte: the real k_max_body limit
    return {
        "request": big + frame(request(0, b"/src/mod.py", b"x = 1\n")),
        "request_opt2": big + frame(request(2, b"m.py", b"def f():\n    pass\n")),
        "reply_code": big + frame(b"\x00\xe3marshal"),
        "reply_error": big + frame(b"\x01" + struct.pack("<iI", 3, 11) + b"SyntaxErrorinvalid syntax"),
        "reply_hello": big + frame(b"\x02pycachefs-driver 3.12"),
        "two_frames": big + frame(b"\x02hi") + frame(b"\x00code"),
        "partial": big + struct.pack("<I", 100) + b"abc",
        "too_large_small_limit": b"\x00\x08" + frame(b"0123456789"),
        "bad_reply_kind": big + frame(b"\x07x"),
        "bad_error_short": big + frame(b"\x01\x00\x00"),
        "bad_request_name_len": big + frame(b"\x00\xff\xff\xff\x7fname"),
    }


def xxh3():
    lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.XXH3_64bits_withSeed.restype = ctypes.c_uint64
    lib.XXH3_64bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    return lib


def entry(lib, kind, payload, source_hash, created):
    head = b"PCFE" + bytes([1, kind, 0, 0]) + struct.pack("<I", len(payload))
    tail = struct.pack("<Qq", source_hash, created)
    seed = lib.XXH3_64bits(head + tail, len(head + tail))
    checksum = lib.XXH3_64bits_withSeed(payload, len(payload), seed)
    return head + struct.pack("<Q", checksum) + tail + payload


def store_entry():
    lib = xxh3()
    code = entry(lib, 1, b"\xe3\x00\x00\x00marshal\x00\xff", 0x0123456789ABCDEF, 1700000000)
    err_payload = (struct.pack("<I", 11) + b"SyntaxError" + struct.pack("<I", 14)
                   + b"invalid syntax" + struct.pack("<i", 3))
    error = entry(lib, 2, err_payload, 7, -5)
    flipped = bytearray(code)
    flipped[40] ^= 0x10
    return {
        "code": code,
        "compile_error": error,
        "empty_code": entry(lib, 1, b"", 0, 0),
        "bad_flipped_payload": bytes(flipped),
        "bad_truncated": code[:-1],
        "bad_short_header": code[:20],
        "bad_version": code[:4] + b"\x02" + code[5:],
        "bad_error_payload": entry(lib, 2, b"\x05\x00\x00\x00abc", 0, 0),
        # Structured layout: kind, source hash, created, damage position, damage mask, body.
        "parts_code": b"\x01" + b"\x11" * 8 + b"\x22" * 8 + b"\x05\x00\x00\x00\x80" + b"code",
        "parts_error": b"\x00" + b"\x00" * 16 + b"\x30\x00\x00\x00\x01" + b"\x03\x00\x00\x00"
                       + b"\x0bSyntaxErrormsg",
    }


def main():
    lib_targets = {"cache_name": cache_name, "pyc_header": pyc_header,
                   "frame_protocol": frame_protocol, "store_entry": store_entry}
    for target, make in lib_targets.items():
        out = os.path.join(CORPUS, target)
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        for name, data in make().items():
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)
        print("%s: %d seeds" % (target, len(os.listdir(out))))


if __name__ == "__main__":
    main()
