"""Mutation check: how many single-change mutants of a module do its tests catch?

``run_mutation(["vision_attn/attention/core.py"])`` copies the repository to temporary folders (the working tree
is never edited, so Ctrl-C leaves it as it was), runs the tests once unchanged while recording which test
executes which line of the module, then for each mutant (see :mod:`dev.mutation.mutants`) writes it into a
copy and runs, with ``pytest -x``, only the tests that reach the mutated lines, fastest first. A failing run
(or a collection error) catches the mutant; one still running after the timeout is caught and flagged
``timeout``; a mutant no test reaches survives as ``uncovered`` without a run. Tests that run the module only in
a child process do not count as reaching it (use ``all_tests=True`` then).

Survivors judged equivalent (no test could tell them apart) are listed in ``tests/mutation_equivalents.txt``,
one per line: ``<module path> <mutant id> <one-line reason>``; they are not run and are left out of the score.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .mutants import Mutant, find_mutants

__all__ = ["DEFAULT_TESTS", "MutationReport", "MutantResult", "read_equivalents", "run_mutation"]

_DETECTION_UNIT_TESTS = [
    f"tests/tasks/test_detection.py::{name}"
    for name in (  # not its training runs: minutes
        "test_matcher_minimises_the_cost_like_brute_force",
        "test_criterion_perfect_prediction_and_aux_losses",
        "test_loss_decreases_as_prediction_moves_to_target",
    )
]
_RESUME_UNIT_TESTS = (
    "test_logged_steps_reads_lightnings_counter_and_refuses_code",
    "test_resume_is_a_frozen_record",
    "test_newest_version_wins_and_ties_go_to_the_higher_version",
    "test_a_run_without_logger_and_relative_roots",
    "test_nothing_to_resume_names_the_folders",
    "test_user_dirpaths_take_the_newest_last_star",
    "test_continuing_writer_drops_rows_from_the_checkpoint_step_on",
    "test_continuing_writer_without_a_step_keeps_every_row",
    "test_resumable_logger_continues_its_version",
)
# The tests that cover each module, when no TESTS= is given; other modules: every test file naming one of
# the module's public names.
DEFAULT_TESTS: Dict[str, List[str]] = {
    "vision_attn/attention/core.py": ["tests/attention/test_core.py"],
    "vision_attn/losses/set_criterion.py": ["tests/losses/test_set_criterion.py", *_DETECTION_UNIT_TESTS],
    "vision_attn/losses/matcher.py": ["tests/losses/test_set_criterion.py", *_DETECTION_UNIT_TESTS],
    "vision_attn/layers/pixel_attention.py": ["tests/layers/test_pixel_attention.py"],
    # the pinned files alone (seconds); the wider files (test_sweep, test_resume's fits, ...) take minutes per mutant
    "vision_attn/run/data_size/journal.py": ["tests/run/test_journal.py"],
    "vision_attn/models/checkpoint.py": ["tests/models/test_checkpoint.py"],
    "vision_attn/run/resume.py": [f"tests/run/test_resume.py::{name}" for name in _RESUME_UNIT_TESTS],
    "vision_attn/callbacks/predictions.py": ["tests/callbacks/test_predictions.py"],
    "vision_attn/layers/spectral_norm.py": ["tests/layers/test_spectral_norm.py"],
}
DEFAULT_EQUIVALENTS = "tests/mutation_equivalents.txt"
_COPY_IGNORE = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", "runs", "lightning_logs", "build"}


@dataclass
class MutantResult:
    mutant: Mutant
    status: str  # caught | timeout | survived | uncovered | equivalent
    detail: str = ""  # the failing test, or the equivalence reason
    diff: str = ""


@dataclass
class MutationReport:
    modules: List[str]
    results: List[MutantResult] = field(default_factory=list)
    stale_equivalents: List[str] = field(default_factory=list)

    def count(self, *statuses: str) -> int:
        return sum(r.status in statuses for r in self.results)

    @property
    def score(self) -> float:
        """Percent of the non-equivalent mutants caught (100 when there are none)."""
        judged = len(self.results) - self.count("equivalent")
        return 100.0 * self.count("caught", "timeout") / judged if judged else 100.0

    def summary(self) -> str:
        return (
            f"{' + '.join(self.modules)}: {len(self.results)} mutants, {self.count('caught', 'timeout')} caught "
            f"({self.count('timeout')} by timeout), {self.count('survived', 'uncovered')} survived "
            f"({self.count('uncovered')} reached by no test), {self.count('equivalent')} equivalents; "
            f"caught, equivalents excluded: {self.score:.1f}%"
        )


def read_equivalents(path: Path) -> Dict[tuple, str]:
    """``{(module path, mutant id): reason}`` from an equivalents file (``#`` starts a comment)."""
    out: Dict[tuple, str] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise ValueError(f"{path}:{n}: expected '<module path> <mutant id> <reason>'; found {line!r}")
        out[(parts[0], parts[1])] = parts[2]
    return out


def _copy_repo(root: Path, dest: Path) -> None:
    """Copy the files git knows (tracked or untracked, not ignored), or everything but caches and venvs."""
    try:
        files = (
            subprocess.run(
                ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True, capture_output=True
            )
            .stdout.decode()
            .split("\0")
        )
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(root, dest, ignore=shutil.ignore_patterns(*_COPY_IGNORE), dirs_exist_ok=True)
        return
    for name in filter(None, files):
        src = root / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _default_tests(root: Path, module: str) -> List[str]:
    """The module's entry in DEFAULT_TESTS, else every test file naming one of its public names."""
    if module in DEFAULT_TESTS:
        return DEFAULT_TESTS[module]
    tree = ast.parse((root / module).read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
    return [
        str(p.relative_to(root))
        for p in sorted((root / "tests").glob("test_*.py"))
        if any(name in p.read_text() for name in names)
    ]


def _imports(root: Path, package: str) -> List[str]:
    """The modules ``package``'s files import from outside it: what a fork server may load once for all runs."""
    names = set()
    for path in (root / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] != package)


class _Runner:
    """Runs pytest in a repository copy: through a fork server holding the heavy imports where ``os.fork``
    exists, else as a new process; a run past its timeout is killed with every process it started."""

    def __init__(self, worker: Path, package: str, preload: List[str], fork: bool) -> None:
        self.worker, self.package, self.preload, self.fork = worker, package, preload, fork
        self.lock = threading.Lock()
        self.sessions: set = set()  # process-group ids of the runs in flight and the servers
        self.servers: Dict[Path, subprocess.Popen] = {}
        self.stopped = False

    def _kill(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _server(self, workdir: Path, env: Dict[str, str]) -> subprocess.Popen:
        if workdir not in self.servers:
            server = subprocess.Popen(
                [sys.executable, str(self.worker), "serve", self.package, *self.preload],
                cwd=workdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                bufsize=0,
            )
            self.servers[workdir] = server
            with self.lock:
                self.sessions.add(server.pid)
        return self.servers[workdir]

    @staticmethod
    def _readline(server: subprocess.Popen, timeout: Optional[float]) -> Optional[str]:
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        if not ready:
            return None
        line = server.stdout.readline().decode()
        if not line:
            raise RuntimeError("mutation: the fork server died (run with fork=False to see why)")
        return line

    def pytest(self, workdir: Path, args: Sequence[str], timeout: Optional[float], env: Dict[str, str], fork=True):
        """``(exit code, or None after a timeout; the run's output)``."""
        args = ["-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rf", *args]
        with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
            if self.fork and fork:
                server = self._server(workdir, env)
                server.stdin.write((json.dumps({"args": args, "log": log.name}) + "\n").encode())
                server.stdin.flush()
                pid = int(self._readline(server, None))
                with self.lock:
                    self.sessions.add(pid)
                line = self._readline(server, timeout)
                if line is None:
                    self._kill(pid)
                    self._readline(server, None)
                code = None if line is None else int(line)
            else:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pytest", *args],
                    cwd=workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                pid = proc.pid
                with self.lock:
                    self.sessions.add(pid)
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    code = None
                self._kill(pid)  # the run and anything it left behind
                proc.wait()
            with self.lock:
                self.sessions.discard(pid)
            log.seek(0)
            return code, log.read()

    def close(self) -> None:
        self.stopped = True
        with self.lock:
            for pgid in list(self.sessions):
                self._kill(pgid)
        for server in self.servers.values():
            server.wait()


def run_mutation(
    modules: Sequence[str],
    tests: Optional[Sequence[str]] = None,
    *,
    root: str = ".",
    max_mutants: Optional[int] = None,
    seed: int = 0,
    jobs: int = 2,
    timeout: Optional[float] = None,
    equivalents: Optional[str] = DEFAULT_EQUIVALENTS,
    all_tests: bool = False,
    only: Optional[Sequence[str]] = None,
    fork: bool = True,
    out: Callable[[str], None] = print,
) -> MutationReport:
    """Mutate ``modules`` (paths relative to ``root``) and run ``tests`` (pytest paths or node ids).

    Args:
        max_mutants, seed: sample this many mutants (all of them by default) with this seed.
        jobs: mutants run in parallel. timeout: seconds per mutant (default 60 + 3x the baseline time of its tests).
        equivalents: the equivalents file (relative to ``root``); None = none.
        all_tests: run every test for every mutant, not only those that reach its lines.
        only: run only the mutants with these ids.
        fork: run the tests through a fork server that imports torch & co. once (where ``os.fork`` exists).
    """
    root_path = Path(root).resolve()
    modules = [str(Path(m).resolve().relative_to(root_path) if Path(m).is_absolute() else Path(m)) for m in modules]
    tests = list(tests) if tests else list(dict.fromkeys(t for m in modules for t in _default_tests(root_path, m)))
    if not tests:
        raise ValueError(f"mutation: no test file names the public names of {modules}; pass tests")
    sources = {m: (root_path / m).read_text() for m in modules}
    mutants = [mu for m in modules for mu in find_mutants(m, sources[m])]
    known = read_equivalents(root_path / equivalents) if equivalents else {}
    ids = {(mu.path, mu.key) for mu in mutants}
    report = MutationReport(
        modules, stale_equivalents=[f"{m} {k}" for m, k in known if m in modules and (m, k) not in ids]
    )
    if only:
        mutants = [mu for mu in mutants if mu.key in set(only)]
    if max_mutants is not None and max_mutants < len(mutants):
        mutants = sorted(random.Random(seed).sample(mutants, max_mutants), key=lambda mu: (mu.path, mu.start))
    out(f"mutation: {len(mutants)} mutants of {', '.join(modules)}; tests: {' '.join(tests)}")

    tmp = Path(tempfile.mkdtemp(prefix="mutation-")).resolve()
    jobs = max(1, min(jobs, len(mutants) or 1))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc of the same size and second would hide a mutant
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    package = Path(modules[0]).parts[0]
    worker = tmp / "_mutation_worker.py"
    runner = _Runner(worker, package, _imports(root_path, package) + ["pytest"], fork and hasattr(os, "fork"))
    try:
        shutil.copy(Path(__file__).with_name("worker.py"), worker)
        workdirs = [tmp / f"repo{i}" for i in range(jobs)]
        envs = {}
        for w in workdirs:
            w.mkdir()
            _copy_repo(root_path, w)
            envs[w] = dict(env, PYTHONPATH=os.pathsep.join([str(w)] + [p for p in [env.get("PYTHONPATH")] if p]))
        free = list(workdirs)
        # Baseline: the unchanged module must pass, and tells which test reaches which line.
        base = workdirs[0]
        trace_env = dict(
            envs[base],
            MUTATION_TRACE_OUT=str(tmp / "trace.json"),
            MUTATION_TRACE_FILES=os.pathsep.join(str(base / m) for m in modules),
            PYTHONPATH=os.pathsep.join([str(tmp), envs[base]["PYTHONPATH"]]),
        )
        started = time.perf_counter()
        code, log = runner.pytest(base, ["-p", "_mutation_worker", *tests], None, trace_env, fork=False)
        if code != 0:
            raise RuntimeError(f"mutation: the tests fail on the unchanged code (pytest exit {code}):\n{log[-3000:]}")
        trace = json.loads((tmp / "trace.json").read_text())
        startup = max(1.0, time.perf_counter() - started - sum(t["seconds"] for t in trace.values()))
        out(f"baseline: {len(trace)} tests pass in {time.perf_counter() - started:.0f} s (traced)")

        def reaching(mu: Mutant) -> List[str]:
            if all_tests or mu.import_time:
                return list(trace)
            wanted = set(mu.lines)
            hits = [t for t, v in trace.items() if wanted & set(v["lines"].get(str(base / mu.path), ()))]
            return sorted(hits, key=lambda t: trace[t]["seconds"])  # fastest first: -x stops at the first failure

        done = [0]

        def one(mu: Mutant) -> MutantResult:
            mutated = mu.apply(sources[mu.path])
            diff = "".join(
                difflib.unified_diff(
                    sources[mu.path].splitlines(True), mutated.splitlines(True), f"a/{mu.path}", f"b/{mu.path}", n=1
                )
            )
            reason = known.get((mu.path, mu.key))
            selected = reaching(mu)
            if reason is not None:
                res = MutantResult(mu, "equivalent", reason, diff)
            elif not selected:
                res = MutantResult(mu, "uncovered", "no test executes these lines", diff)
            elif runner.stopped:
                raise KeyboardInterrupt
            else:
                with runner.lock:
                    work = free.pop()
                target = work / mu.path
                limit = timeout or 60 + 3 * (startup + sum(trace[t]["seconds"] for t in selected))
                try:
                    target.write_text(mutated)
                    code, log = runner.pytest(work, ["-x", *selected], limit, envs[work])
                finally:
                    target.write_text(sources[mu.path])
                    with runner.lock:
                        free.append(work)
                failed = next((ln[7:] for ln in log.splitlines() if ln.startswith("FAILED ")), "")
                if code is None:
                    res = MutantResult(mu, "timeout", f"still running after {limit:.0f} s", diff)
                elif code == 0:
                    res = MutantResult(mu, "survived", f"{len(selected)} tests pass", diff)
                # failed tests, collection error; 4: node ids "not found" because their module no longer imports
                # (the same ids collected on the baseline)
                elif code in (1, 2, 3, 4):
                    res = MutantResult(mu, "caught", failed or f"pytest exit {code}", diff)
                else:
                    res = MutantResult(mu, "survived", f"pytest exit {code}: {log[-300:]}", diff)
            with runner.lock:
                done[0] += 1
                out(f"[{done[0]:>4}/{len(mutants)}] {res.status:<10} {mu.path}:{mu.line} {mu.key} {mu.description}")
            return res

        with ThreadPoolExecutor(jobs) as pool:
            futures = [pool.submit(one, mu) for mu in mutants]
            try:
                report.results = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                runner.close()
                raise
    finally:
        runner.close()
        shutil.rmtree(tmp, ignore_errors=True)

    for r in report.results:
        if r.status in ("survived", "uncovered"):
            out(
                f"\nSURVIVED {r.mutant.path}:{r.mutant.line} {r.mutant.key} ({r.detail})\n{r.diff}"
                f"  if equivalent, add to {equivalents}: {r.mutant.path} {r.mutant.key} <why no test can tell>"
            )
    for s in report.stale_equivalents:
        out(f"note: {equivalents} lists {s}, which is no longer a mutant of the module")
    out(report.summary())
    return report
