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
        code = compile(source, filename, 'exec', dont_inherit=True, optimize=optimize)
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


def open_nothing_from_here_on():
    # compile() reads a source line back by file name to decorate a SyntaxError (3.6+: compiler
    # errors, 3.9+: parser errors too), and that name is often under the daemon's own mount: a
    # worker reading through it would wait on the daemon that waits on the worker. With no
    # descriptor left to take, open() fails (EMFILE) before the kernel walks the path, and
    # CPython goes on without the line. (-W ignore keeps warnings from reading lines too.)
    try:
        import resource
    except ImportError:
        if hasattr(sys, 'addaudithook'):
            sys.addaudithook(deny_open)
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def deny_open(event, args):
    if event == 'open':
        raise PermissionError('a compile worker opens no file')


def main():
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    open_nothing_from_here_on()
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
