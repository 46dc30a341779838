"""A corpus of hostile and broken programs: each ends with a clear error within its limits,
the pool keeps serving, and the host process is unharmed."""

import os
import textwrap
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from builder.executor import Limits, Sandbox

TIMEOUT = 1.0


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
    # --- more escapes: shared state, unicode spellings, exits, odd outputs
    ("fork", prog("import os\nreturn os.fork()"), {"validation"}, "import"),
    ("patch-class-monkeypatch", prog("ImagePatch.find = lambda self, name: []\nreturn 1"), {"validation"},
     "assigning"),
    ("patch-class-delete", prog("del ImagePatch.count\nreturn 1"), {"validation"}, "deleting"),
    ("helper-attr-store", prog("leftmost.count = 1\nreturn 1"), {"validation"}, "assigning"),
    ("unicode-eval", prog("return \uff45\uff56\uff41\uff4c('1+1')"), {"validation"}, "eval() is not allowed"),
    ("unicode-dunder", prog("return ().\uff3f\uff3fclass__"), {"syntax", "validation"}, ""),
    ("unicode-globals", prog("f = lambda: 0\nreturn f.\uff47lobals"), {"validation"}, ".globals is not allowed"),
    ("system-exit", prog("raise SystemExit(0)"), {"runtime"}, "NameError"),
    ("print-to-file", prog("print('x', file=None)\nreturn 1"), {"runtime"}, "TypeError"),
    ("iter-sentinel", prog("return list(iter(lambda: 0, 1))"), {"memory", "timeout"}, ""),
    ("huge-int-str", prog("return str(10**100000)"), {"runtime"}, "ValueError"),
    ("tuple-keys", prog("return {(1, 2): 3}"), {"output"}, "keys"),
    ("return-generator", prog("return (x for x in [1])"), {"output"}, "generator"),
    ("forged-patch-return", prog("return ImagePatch(5, (0, 0, 1, 1))"), {"output"}, "image 5"),
    ("huge-tool-arg", prog("return image.find('x' * 10**7)"), {"output"}, "limit"),
    ("bad-patch-list", prog("return best_image_match([1, 2], 'x')"), {"runtime"}, "AttributeError"),
    ("interrupted-call-memory", prog("""
        hog = []
        try:
            while True:
                hog.append('x' * 10**5)
        except Exception:
            pass
        for i in range(300):
            try:
                image.find('many')
                break
            except Exception:
                hog.pop()
        hog = None
        return 'poisoned?'
     """), {"tool", "memory", "timeout"}, ""),  # filling 256 MB on a loaded CI core can outlast 1 s
    ("interrupted-call-recursion", prog("""
        def f(n):
            try:
                f(n + 1)
            except Exception:
                pass
            try:
                image.find('many')
            except Exception:
                pass
            return n
        f(0)
        return 'poisoned?'
     """), {"tool", "timeout"}, ""),
    ("stall-after-interrupted-call", prog("""
        def f(n):
            try:
                f(n + 1)
            except Exception:
                pass
            try:
                image.find('many')
            except Exception:
                while True:
                    pass
            return n
        f(0)
     """), {"timeout", "ok"}, ""),
]


def fake_dispatch(tool, ref, args):
    if tool == "find":
        if not args or not args[0]:
            raise ValueError("find needs a non-empty text argument")
        # "many" makes a reply too big for the pipe buffer and costly to parse
        return [{"box": [10, 10, 20, 20], "score": 0.9}] * (20_000 if args[0] == "many" else 1)
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
    # Two threads at once, as a batch runner would use the pool.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda h: sandbox.run(h[1], image_sizes=[(64, 48)], dispatch=fake_dispatch), HOSTILE))
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


@pytest.mark.parametrize("name", ["interrupted-call-memory", "interrupted-call-recursion"])
def test_interrupted_tool_call_cannot_poison_later_runs(name):
    """A tool call cut short inside the worker (out of memory, recursion limit) may leave a
    stale reply in the pipe; later runs on the same pool must still get their own answers."""
    source = {h[0]: h[1] for h in HOSTILE}[name]
    with Sandbox(workers=1, limits=Limits(timeout_s=TIMEOUT, memory_mb=256)) as sb:
        first = sb.run(source, image_sizes=[(64, 48)], dispatch=fake_dispatch)
        assert first.ok or first.error.kind in ("tool", "memory", "timeout"), first.error
        for i in range(4):
            res = sb.run(prog(f"return [len(image.find('circle')), {i}]"), [(64, 48)], fake_dispatch)
            assert res.ok and res.value == [1, i] and res.tool_calls == 1, (res.value, res.error)


def test_weakest_level_still_contains_the_runtime_corpus():
    """Without bwrap and seccomp (rlimits and the AST check only), every program that gets past
    validation still ends with its expected error and the pool keeps serving."""
    runtime = [h for h in HOSTILE if not h[2] <= {"validation", "syntax"}]
    with Sandbox(workers=2, limits=Limits(timeout_s=TIMEOUT, memory_mb=256, max_tool_calls=200),
                 isolation="minimal") as sb:
        assert sb.layers == ["ast", "rlimits"]
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda h: sb.run(h[1], [(64, 48)], fake_dispatch), runtime))
        for (name, _, kinds, _), res in zip(runtime, results, strict=True):
            assert ("ok" in kinds) if res.ok else (res.error.kind in kinds), (name, res.error)
        res = sb.run(prog("return len(image.find('circle'))"), [(64, 48)], fake_dispatch)
        assert res.ok and res.value == 1


def test_bwrap_layer_has_read_only_files_and_no_network(tmp_path):
    """The namespace layer on its own: trusted probe code run under the same bwrap prefix."""
    import socket
    import subprocess
    import sys

    from builder.executor import bwrap_command

    prefix = bwrap_command()
    if prefix is None:
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    target = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".bwrap_probe")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        code = textwrap.dedent(
            f"""
            import socket
            out = []
            try:
                open({target!r}, "w")
                out.append("write:allowed")
            except OSError:
                out.append("write:denied")
            try:
                socket.create_connection(("127.0.0.1", {server.getsockname()[1]}), timeout=2)
                out.append("net:allowed")
            except OSError:
                out.append("net:denied")
            print(" ".join(out))
            """
        )
        res = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["write:denied", "net:denied"], res.stdout + res.stderr
    assert not os.path.exists(target)
