"""A corpus of hostile and broken programs: each ends with a clear error within its limits,
the pool keeps serving, and the host process is unharmed."""

import os
import textwrap

import psutil
import pytest

from builder.executor import Limits, Sandbox

TIMEOUT = 2.0


def prog(body: str, params: str = "image") -> str:
    return f"def execute({params}):\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


# (id, source, allowed error kinds, a fragment of the message)
HOSTILE = [
    # --- loops and recursion
    ("while-true", prog("while True:\n    pass"), {"timeout"}, "did not finish"),
    ("busy-range", prog("n = 0\nfor i in range(10**12):\n    n += i\nreturn n"), {"timeout"}, "did not finish"),
    ("recursion", prog("def f(n):\n    return f(n + 1)\nreturn f(0)"), {"runtime"}, "recursion"),
    ("mutual-recursion", prog("def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\nreturn a(1)"),
     {"runtime"}, "recursion"),
    ("lambda-recursion", prog("f = lambda g: g(g)\nreturn f(f)"), {"runtime"}, "recursion"),
    ("catch-and-loop", prog("while True:\n    try:\n        1 / 0\n    except Exception:\n        pass"),
     {"timeout"}, "did not finish"),
    ("big-pow", prog("return pow(10, 10**9)"), {"timeout", "memory"}, ""),
    # --- memory
    ("huge-string", prog("return 'x' * 10**10"), {"memory"}, "memory"),
    ("huge-list", prog("return [0] * 10**9"), {"memory"}, "memory"),
    ("growing-list", prog("a = []\nwhile True:\n    a.append('y' * 10**6)"), {"memory", "timeout"}, ""),
    ("nested-growth", prog("a = [1]\nfor i in range(100):\n    a = [a, a, a]\nreturn str(a)"),
     {"memory", "timeout", "runtime"}, ""),
    # --- output size
    ("giant-return", prog("return 'x' * 10**8"), {"output"}, "limit"),
    ("giant-list-return", prog("return list(range(10**6))"), {"output"}, "limit"),
    ("print-flood", prog("for i in range(10**6):\n    print('spam', i)\nreturn 1"), {"ok"}, "truncated"),
    ("self-referencing", prog("a = []\na.append(a)\nreturn a"), {"output"}, "nested"),
    ("return-function", prog("return len"), {"output"}, "cannot return"),
    ("return-nan", prog("return float('nan')"), {"output"}, "non-finite"),
    ("return-huge-int", prog("return 10**100"), {"output"}, "too large"),
    # --- imports and builtins that reach outside
    ("import", prog("import os\nreturn os.getcwd()"), {"validation"}, "import is not allowed"),
    ("from-import", prog("from subprocess import run\nreturn 1"), {"validation"}, "import"),
    ("dunder-import", prog("return __import__('os').system('id')"), {"validation"}, "not allowed"),
    ("builtins-dict", prog("return __builtins__['open']('/etc/passwd')"), {"validation"}, "'_'"),
    ("open", prog("return open('/etc/passwd').readline()"), {"validation"}, "not allowed"),
    ("open-write", prog("f = open('/tmp/pwned', 'w')\nreturn 1"), {"validation"}, "open() is not allowed"),
    ("exec", prog("exec('import os')\nreturn 1"), {"validation"}, "exec() is not allowed"),
    ("eval", prog("return eval('1+1')"), {"validation"}, "eval() is not allowed"),
    ("compile", prog("return compile('1', 'x', 'eval')"), {"validation"}, "compile() is not allowed"),
    ("getattr", prog("return getattr(image, '_image')"), {"validation"}, "getattr() is not allowed"),
    ("type-escape", prog("return type(image)"), {"validation"}, "type() is not allowed"),
    ("globals", prog("return globals()"), {"validation"}, "globals() is not allowed"),
    ("vars", prog("return vars(image)"), {"validation"}, "vars() is not allowed"),
    # --- dunder and frame escapes
    ("mro-escape", prog("return ().__class__.__mro__[1].__subclasses__()"), {"validation"}, "'_'"),
    ("func-globals", prog("f = lambda: 0\nreturn f.__globals__"), {"validation"}, "'_'"),
    ("generator-frame", prog("g = (x for x in [1])\nreturn g.gi_frame.f_back.f_globals"), {"validation"},
     "not allowed"),
    ("exception-traceback", prog("try:\n    1/0\nexcept Exception as e:\n    return e.__traceback__.tb_frame"),
     {"validation"}, "not allowed"),
    ("format-attr", prog("return '{0.__class__}'.format(image)"), {"validation"}, ".format is not allowed"),
    ("format-map", prog("return '{x.score}'.format_map({'x': image})"), {"validation"}, "format_map"),
    ("private-attr", prog("return image._image"), {"validation"}, "'_'"),
    ("transport", prog("return find.__module__"), {"validation"}, "'_'"),
    ("class-def", "class A:\n    pass\ndef execute(image):\n    return 1\n", {"validation"}, "ClassDef"),
    ("global-stmt", prog("global x\nx = 1\nreturn x"), {"validation"}, "Global"),
    ("with-stmt", prog("with image:\n    pass\nreturn 1"), {"validation"}, "With"),
    ("async", "async def execute(image):\n    return 1\n", {"validation"}, "AsyncFunctionDef"),
    ("yield", prog("yield 1"), {"validation"}, "Yield"),
    ("decorator", "def d(f):\n    return f\n@d\ndef execute(image):\n    return 1\n", {"validation"}, "decorator"),
    ("top-level-code", "x = 1\ndef execute(image):\n    return x\n", {"validation"}, "top level"),
    ("top-level-open", "x = open\ndef execute(image):\n    return 1\n", {"validation"}, "open() is not allowed"),
    ("match-stmt", prog("match image:\n    case _:\n        return 1"), {"validation"}, "Match"),
    # --- broken programs
    ("syntax-error", "def execute(image)\n    return 1\n", {"syntax"}, "syntax error"),
    ("indentation", "def execute(image):\nreturn 1\n", {"syntax"}, "line 2"),
    ("no-entry", "def run(image):\n    return 1\n", {"validation"}, "named 'execute'"),
    ("empty", "", {"validation"}, "named 'execute'"),
    ("entry-no-params", "def execute():\n    return 1\n", {"validation"}, "first parameter"),
    ("entry-bad-param", "def execute(image, secret):\n    return 1\n", {"validation"}, "'secret'"),
    ("entry-varargs", "def execute(*args):\n    return 1\n", {"validation"}, "plain parameters"),
    ("zero-division", prog("x = 1\nreturn x / 0"), {"runtime"}, "ZeroDivisionError"),
    ("index-error", prog("return image.find('circle')[5]"), {"runtime"}, "IndexError"),
    ("tool-bad-arg", prog("return image.find('')"), {"tool"}, "non-empty"),
    ("tool-flood", prog("n = 0\nfor i in range(10000):\n    n += len(image.find('circle'))\nreturn n"),
     {"tool"}, "tool calls"),
    ("forged-patch", prog("return ImagePatch(7, (0, 0, 5, 5)).find('circle')"), {"tool"}, "invalid image patch"),
    ("forged-huge-box", prog("return ImagePatch(0, (0, 0, 10**9, 5)).find('circle')"), {"tool"},
     "invalid image patch"),
    ("nul-byte", "def execute(image):\n    return '\x00'\n", {"syntax", "ok"}, ""),
    ("deep-nesting", "def execute(image):\n    return " + "(" * 500 + "1" + ")" * 500 + "\n", {"syntax"}, ""),
    ("huge-source", prog("x = 1\n" * 20000 + "return x"), {"validation"}, "limit"),
]


def fake_dispatch(tool, ref, args):
    if tool == "find":
        if not args or not args[0]:
            raise ValueError("find needs a non-empty text argument")
        return [{"box": [10, 10, 20, 20], "score": 0.9}]
    raise ValueError(f"no engine for {tool}")


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(timeout_s=TIMEOUT, memory_mb=256, max_tool_calls=200)) as sb:
        yield sb


def test_corpus_is_large_enough():
    assert len(HOSTILE) >= 40
    assert len({h[0] for h in HOSTILE}) == len(HOSTILE)


@pytest.mark.parametrize(("name", "source", "kinds", "fragment"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_program_fails_clearly(sandbox, name, source, kinds, fragment):
    res = sandbox.run(source, image_sizes=[(64, 48)], dispatch=fake_dispatch)
    if res.ok:
        assert "ok" in kinds, f"{name} unexpectedly succeeded: {res.value!r}"
        assert fragment in res.stdout
        assert len(res.stdout) < 20_000
        return
    assert res.error.kind in kinds, f"{name}: {res.error}"
    assert fragment.lower() in str(res.error).lower(), f"{name}: {res.error}"
    assert res.duration_s < TIMEOUT + 3, f"{name} took {res.duration_s:.1f}s"


def test_pool_survives_corpus_and_host_is_unharmed(sandbox, tmp_path):
    marker = tmp_path / "marker.txt"
    marker.write_text("host data")
    me = psutil.Process(os.getpid())
    for _, source, _, _ in HOSTILE:
        sandbox.run(source, image_sizes=[(64, 48)], dispatch=fake_dispatch)
    res = sandbox.run(prog("return len(image.find('circle'))"), image_sizes=[(64, 48)], dispatch=fake_dispatch)
    assert res.ok and res.value == 1
    assert marker.read_text() == "host data"
    assert not os.path.exists("/tmp/pwned")
    # Only the pool's own workers (at most 2, each maybe under bwrap) remain as children.
    children = me.children(recursive=False)
    assert len(children) <= 2, children
    assert me.memory_info().rss < 1.5 * 2**30


def test_seccomp_blocks_os_access_even_past_the_ast_check(sandbox):
    """If a program got past the AST wall, the worker itself still cannot open, fork or connect."""
    if "seccomp" not in sandbox.layers:
        pytest.skip("libseccomp is not available on this machine")
    # Run the worker's own lock-down in a child and probe it from trusted code.
    import subprocess
    import sys

    from builder.executor import worker

    code = textwrap.dedent(
        """
        import os, socket, sys
        from builder.executor.worker import apply_limits
        apply_limits(256)
        out = []
        for name, fn in [("open", lambda: open("/etc/hostname")), ("write", lambda: open("/tmp/x", "w")),
                         ("fork", os.fork), ("socket", socket.socket), ("exec", lambda: os.execv("/bin/true", ["true"]))]:
            try:
                fn()
                out.append(name + ":allowed")
            except OSError:
                out.append(name + ":denied")
        sys.stdout.write(" ".join(out))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(worker.__file__)) + "/..")
    assert res.stdout.split() == ["open:denied", "write:denied", "fork:denied", "socket:denied", "exec:denied"], (
        res.stdout + res.stderr
    )
