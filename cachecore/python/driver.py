# pycachefs compile worker. Run as: python -I -S -c <this file>, stdin/stdout are pipes.
# Must run unchanged on CPython 3.6 .. 3.13: no walrus, no newer syntax, stdlib builtins only.
# Frames both ways: u32 little-endian length, then the body.
# Request body: u8 optimize, u32 filename length, filename (UTF-8, surrogateescape), source bytes.
# Reply body: b'\x00' + marshal.dumps(code)
#          or b'\x01' + i32 lineno + u32 len + exception type name + message (UTF-8)
# The first frame the worker sends is b'\x02' + a greeting, so the parent knows it is up.
import marshal
import struct
import sys


def read_exact(stream, size):
    data = stream.read(size)
    if data is None or len(data) != size:
        return None
    return data


def send(stream, body):
    stream.write(struct.pack('<I', len(body)))
    stream.write(body)
    stream.flush()


def text(value):
    return value.encode('utf-8', 'backslashreplace')


def compile_one(body):
    optimize = body[0]
    name_len = struct.unpack_from('<I', body, 1)[0]
    filename = body[5:5 + name_len].decode('utf-8', 'surrogateescape')
    # compile() decodes bytes like importlib does (coding cookie, BOM): never decode here.
    source = body[5 + name_len:]
    try:
        code = compile_named(source, filename, optimize)
        return b'\x00' + marshal.dumps(code)
    except Exception as exc:
        message = getattr(exc, 'msg', None) if isinstance(exc, SyntaxError) else None
        if not isinstance(message, str):
            message = str(exc)
        line = getattr(exc, 'lineno', None) if isinstance(exc, SyntaxError) else None
        if not isinstance(line, int):
            line = 0
        kind = text(type(exc).__name__)
        return (b'\x01' + struct.pack('<iI', max(-2**31, min(line, 2**31 - 1)), len(kind)) +
                kind + text(message))


# compile() reads a source line back by file name to decorate a SyntaxError (3.6+: compiler
# errors, 3.9+: parser errors too), and that name is usually under the daemon's own mount: a
# worker reading through it would wait on the daemon that waits on the worker. 3.8+: an audit
# hook refuses that one open (other opens stay: a coding cookie imports its codec), and CPython
# goes on without the line. 3.6/3.7 have no audit hooks: a first compile under a name that
# names no file finds any error; only a source that compiles is compiled again under its own
# name. (-W ignore on the command line keeps warnings from reading lines back too.)
refused = [None]


def refuse_reading_back(event, args):
    if event == 'open' and refused[0] is not None and args and args[0] == refused[0]:
        raise PermissionError('a compile worker does not read ' + refused[0])


def compile_named(source, filename, optimize):
    if hasattr(sys, 'addaudithook'):
        refused[0] = filename
        try:
            return compile(source, filename, 'exec', dont_inherit=True, optimize=optimize)
        finally:
            refused[0] = None
    compile(source, '<pycachefs: no file>', 'exec', dont_inherit=True, optimize=optimize)
    return compile(source, filename, 'exec', dont_inherit=True, optimize=optimize)


def main():
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    if hasattr(sys, 'addaudithook'):
        sys.addaudithook(refuse_reading_back)
    send(stdout, b'\x02pycachefs-driver 1')
    while True:
        head = read_exact(stdin, 4)
        if head is None:
            return
        body = read_exact(stdin, struct.unpack('<I', head)[0])
        if body is None:
            return
        send(stdout, compile_one(body))


main()
