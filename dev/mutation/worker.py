"""The processes of the mutation check (:mod:`dev.mutation.runner`); standard library and pytest only.

The check copies this file next to the repository copies and uses it in two ways:

* ``-p _mutation_worker`` on the unchanged baseline run: records the module lines each test executes (set
  ``MUTATION_TRACE_FILES`` and ``MUTATION_TRACE_OUT``).
* ``python _mutation_worker.py serve PACKAGE MODULE...``: a fork server. It imports the heavy third-party
  modules once (torch alone takes seconds), never the mutated package, then for each request line
  ``{"args": [...], "log": path}`` forks a child that runs ``pytest.main(args)`` in a new session (so the
  whole run can be killed on a timeout), answering one line with the child's pid and one with its exit code.
"""

import importlib
import json
import os
import sys
import threading
import time

import pytest

_FILES = set(filter(None, os.environ.get("MUTATION_TRACE_FILES", "").split(os.pathsep)))
_RESULTS: dict = {}
_CURRENT: dict = {}


def _global_trace(frame, event, arg):
    name = frame.f_code.co_filename
    if name not in _FILES:
        return None  # no line events for the rest of the world: keeps the traced run fast
    lines = _CURRENT.setdefault(name, set())
    lines.add(frame.f_lineno)

    def local_trace(frame, event, arg):
        lines.add(frame.f_lineno)
        return local_trace

    return local_trace


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _CURRENT.clear()
    start = time.perf_counter()
    sys.settrace(_global_trace)
    threading.settrace(_global_trace)
    try:
        yield
    finally:
        sys.settrace(None)
        threading.settrace(None)
        _RESULTS[item.nodeid] = {
            "seconds": time.perf_counter() - start,
            "lines": {f: sorted(v) for f, v in _CURRENT.items()},
        }


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("MUTATION_TRACE_OUT"):
        with open(os.environ["MUTATION_TRACE_OUT"], "w") as f:
            json.dump(_RESULTS, f)


def _child(request: dict) -> int:
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.path.insert(0, os.getcwd())  # as `python -m pytest` does
    try:
        return int(pytest.main(request["args"]))
    except BaseException as e:  # noqa: BLE001 - any crash of the run is an error exit, reported in the log
        print(f"mutation worker: pytest raised {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def serve(package: str, modules: list) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional or broken module is simply not preloaded
            pass
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]  # the package under test must be imported fresh, mutated, by each child
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                code = _child(request)
            finally:
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(sys.argv[2], sys.argv[3:])
