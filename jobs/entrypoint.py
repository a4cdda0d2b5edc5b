"""What every job shares: flag parsing conventions, logging, signals and exit codes.

Exit codes: 0 success, 2 bad input or arguments, 1 an unexpected or environment failure (a full
disk, a lost network), 3 a completed run that failed its own check (quality gate, error-rate
limit), 143 stopped by SIGTERM. Every failure is one line on stderr; `--verbose` adds the
traceback and the libraries' own logs (Beam, TensorFlow), which are quiet by default.

Logs go to stderr in one of two formats, chosen once per process here: `--log-format text` (the
default: `time LEVEL logger: message`) or `--log-format json` (or FMNIST_LOG_FORMAT=json, which
the compiled pipeline tasks set): one JSON object per line with `severity`, `message`, `time`
and the labels step, run_id, run_date and model_version where known, under
`logging.googleapis.com/labels`: the fields Cloud Logging parses. The one-line error of a failed
step is such a line too, with severity ERROR. At a terminal with text logs, the per-unit lines of
a long step (scoring's shards, training's epochs) become one updating progress line.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import gc
import importlib.abc
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from components.constants import LOG_LABELS, PROGRESS_LOG_FIELD
from components.contracts.parameters import Parameter, parameters_of
from components.errors import CheckFailed, InputError, RunConflict, Terminated, raise_terminated
from components.io import storage
from components.io.storage import StorageConflictError

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_TERMINATED = 0, 1, 2, 3, 143
# One format on stderr for every step, locally and in the cloud's log collectors.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Our own packages log one line per phase; every other library only its warnings.
OWN_LOGGERS = ("components", "jobs")
LOG_FORMATS = ("text", "json")
LOG_FORMAT_VARIABLE = "FMNIST_LOG_FORMAT"  # json in pipeline tasks (components/cloud/pipelines.py)
# Cloud Logging's special fields of a structured log line (its severity names are logging's, but CRITICAL).
LABELS_FIELD = "logging.googleapis.com/labels"
_SEVERITIES = {"CRITICAL": "CRITICAL", "ERROR": "ERROR", "WARNING": "WARNING", "INFO": "INFO", "DEBUG": "DEBUG"}

log = logging.getLogger(__name__)

# As Python tears the modules down at exit, its garbage collector walks and frees everything they
# hold: with TensorFlow, Keras and Beam loaded, 0.85 of the 0.95 s a job process takes to end (2
# cores; benchmarks/process_exit.py). Frozen objects are skipped, and the operating system reclaims
# an ending process's memory anyway; by then the job has published and closed what it wrote, and
# temporary folders are removed by their own exit hooks.
atexit.register(gc.freeze)


class OneLineErrorParser(argparse.ArgumentParser):
    """Reports a bad flag in one line (not argparse's usage block), exit 2: the error contract."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message} (see --help)\n")


def new_parser(prog: str, description: str, parameters: type | None = None) -> argparse.ArgumentParser:
    """A parser whose unset flags stay unset, so the component's defaults apply.

    Every step gets `--verbose`, which `run` consumes: the component never sees it. With a
    step's `parameters` dataclass, one flag per field (components.contracts.parameters).
    """
    parser = OneLineErrorParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="show every library's INFO logs (Beam, TensorFlow) and tracebacks")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help=f"stderr as text lines or one JSON object per line (default: ${LOG_FORMAT_VARIABLE}, else text)",
    )
    parser.set_defaults(log_step=prog.removeprefix("fmnist ").split()[0])  # the `step` label of its logs
    if parameters is not None:
        add_parameters(parser, parameters)
    return parser


def add_parameters(parser: argparse.ArgumentParser, parameters: type) -> None:
    """Adds the flag (or positional argument) of every field of a step's parameters dataclass."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for parameter in parameters_of(parameters):
        target: Any = parser
        if parameter.exclusive_group is not None:
            if parameter.exclusive_group not in groups:
                groups[parameter.exclusive_group] = parser.add_mutually_exclusive_group()
            target = groups[parameter.exclusive_group]
        names, options = _argument(parameter)
        target.add_argument(*names, **options)


def _argument(parameter: Parameter) -> tuple[list[str], dict[str, Any]]:
    """argparse's names and options of one parameter."""
    help_text = parameter.help_with_default()
    if parameter.positional:
        optional = {} if parameter.required else {"nargs": "?", "default": parameter.default}
        return [parameter.name], {"type": _flag_type(parameter), "help": help_text, **optional}
    names = [parameter.flag, *parameter.deprecated_aliases]
    options: dict[str, Any] = {"dest": parameter.name}
    if parameter.deprecated_aliases:
        options["action"] = DeprecatedAlias
        aliases = ", ".join(parameter.deprecated_aliases)
        help_text += f"; {aliases} is a deprecated alias"
    if parameter.kind is bool:
        options.update(action="store_true", help=help_text)
        return names, options
    options.update(type=_flag_type(parameter), help=help_text)
    if parameter.choices:
        options["choices"] = parameter.choices
    if parameter.required:
        options["required"] = True
    return names, options


def _flag_type(parameter: Parameter) -> Callable[[str], Any]:
    return uri if parameter.location else parameter.kind


class DeprecatedAlias(argparse._StoreAction):
    """Stores the value like the flag itself; an old name still works and says, in one log line, which one replaced it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string is not None and option_string != self.option_strings[0]:
            if not logging.getLogger().handlers:  # configure_logging runs later, after parsing: the environment's format
                _install_handler(logging.getLogger(), "json" if os.environ.get(LOG_FORMAT_VARIABLE) == "json" else "text", {})
            log.warning("%s is deprecated; use %s", option_string, self.option_strings[0])
        super().__call__(parser, namespace, values, option_string)


def uri(value: str) -> str:
    """The argparse type of every location flag: the storage layer's URI check, as a flag error."""
    try:
        return storage.check_uri(value)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def configure_logging(*, verbose: bool, log_format: str | None = None, labels: dict[str, str] | None = None) -> None:
    """Quiet by default: our one line per phase, the libraries' warnings; everything with verbose.

    The format (text or json: the flag, else $FMNIST_LOG_FORMAT, else text) is set here for the
    whole process, on the root logger's one handler. TensorFlow reads TF_CPP_MIN_LOG_LEVEL when it
    is first imported, which components do lazily, after this (a value the caller set is kept);
    its import-time banner, which no setting silences, is muted by importing it with stderr closed.
    """
    chosen = resolved_log_format(log_format)
    root = logging.getLogger()
    if chosen == "json" or _HANDLER_MARK not in {getattr(handler, "name", None) for handler in root.handlers}:
        _install_handler(root, chosen, labels or {})
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    # Not even C++ errors: those that matter surface as Python exceptions; the rest are noise
    # such as SavedModel export's "NodeDef mentions attribute ..." (TF 2.21).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _MutedImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _MutedImport("tensorflow"))


_HANDLER_MARK = "fmnist-stderr"


def resolved_log_format(log_format: str | None) -> str:
    """The flag's format, else the environment's, else text; a bad environment value is bad input."""
    chosen = log_format or os.environ.get(LOG_FORMAT_VARIABLE) or "text"
    if chosen not in LOG_FORMATS:
        raise InputError(f"{LOG_FORMAT_VARIABLE}={chosen!r}: use one of {', '.join(LOG_FORMATS)}")
    return chosen


def _install_handler(root: logging.Logger, log_format: str, labels: dict[str, str]) -> None:
    """One stderr handler in the chosen format. JSON replaces every handler (a library's or a test
    runner's own would print lines that are not JSON); text keeps a host's handlers, like basicConfig."""
    if log_format == "json":
        for handler in list(root.handlers):
            root.removeHandler(handler)
        logging.captureWarnings(True)  # warnings.warn would print plain text to stderr
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter(labels))
    elif root.handlers:  # a host (a test runner) has its handlers: leave them, as basicConfig does
        return
    elif sys.stderr.isatty():
        handler = ProgressHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.name = _HANDLER_MARK
    root.addHandler(handler)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record, in Cloud Logging's structured-log fields. Labels given at the
    start (step, run id and date from the flags) and those a record carries stay for later records."""

    def __init__(self, labels: dict[str, str]):
        super().__init__()
        self.labels = {key: str(value) for key, value in labels.items() if value}

    def format(self, record: logging.LogRecord) -> str:
        for key in LOG_LABELS:
            value = getattr(record, key, None)
            if value:
                self.labels[key] = str(value)
        message = record.getMessage()
        if record.exc_info:  # with --verbose: the traceback belongs to the same entry
            message += "\n" + self.formatException(record.exc_info)
        document: dict[str, Any] = {
            "severity": _SEVERITIES.get(record.levelname, "DEFAULT"),
            "message": message,
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "logger": record.name,
        }
        if self.labels:
            document[LABELS_FIELD] = dict(self.labels)
        return json.dumps(document, default=str)


class ProgressHandler(logging.StreamHandler):
    """Text logs at a terminal: records that carry progress (PROGRESS_LOG_FIELD) update one line
    (`shards 12/300 · images 3,520/96,000 · 2,410 images/s · 38 s left`) instead of adding a line
    each; any other record is printed on a line of its own, the progress line drawn again below it."""

    def __init__(self, stream):
        super().__init__(stream)
        self.state: dict[str, Any] = {}
        self.shown = ""

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, PROGRESS_LOG_FIELD, None)
        if not isinstance(progress, dict) or progress.get("done") == 0:  # a unit's start keeps its own line
            self._clear()
            super().emit(record)
            if not isinstance(progress, dict):
                self._draw()
                return
        self._advance(progress)
        self._draw()
        if self.state.get("total") is not None and self.state["done"] >= self.state["total"]:
            self.stream.write("\n")  # finished: the line stays as the unit's summary
            self.stream.flush()
            self.state, self.shown = {}, ""

    def _advance(self, progress: dict) -> None:
        if progress.get("unit") != self.state.get("unit") or progress.get("done") == 0:
            self.state = {"unit": progress.get("unit"), "done": 0, "items": 0, "started": time.monotonic()}
        state = self.state
        state["done"] = progress["done"] if progress.get("done") is not None else state["done"] + 1
        state["items"] += int(progress.get("items") or 0)
        for key in ("total", "items_total"):
            if progress.get(key) is not None:
                state[key] = progress[key]

    def _draw(self) -> None:
        if not self.state or not self.state["done"] and self.state.get("total") is None:
            return
        state, elapsed = self.state, max(time.monotonic() - self.state["started"], 1e-6)
        parts = [f"{state['unit']} {state['done']}/{state.get('total', '?')}"]
        if state["items"] or state.get("items_total"):
            parts.append(
                f"images {state['items']:,}/{state['items_total']:,}"
                if state.get("items_total")
                else f"images {state['items']:,}"
            )
            parts.append(f"{state['items'] / elapsed:,.0f} images/s")
        if state["done"] and state.get("total"):
            parts.append(f"{elapsed / state['done'] * (state['total'] - state['done']):.0f} s left")
        self.shown = " · ".join(parts)
        self.stream.write("\r\033[K" + self.shown)
        self.stream.flush()

    def _clear(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")


class _MutedImport(importlib.abc.MetaPathFinder):
    """Imports one package with file descriptor 2 pointed at /dev/null.

    TensorFlow 2.21 prints its C++ banners (oneDNN's, or the CPU feature guard's where oneDNN
    is off) from static initialisers while it is imported, before TF_CPP_MIN_LOG_LEVEL or any
    log setting applies. An import that fails still raises its ImportError, reported once
    stderr is back.
    """

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and so that the search below finds the real package
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def muted_exec_module(module) -> None:
                with _stderr_to_devnull():
                    exec_module(module)

            spec.loader.exec_module = muted_exec_module
        return spec


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run(component: Callable[..., Any], kwargs: dict[str, Any]) -> int:
    """Calls the component, prints its JSON result on stdout, and maps failures to exit codes."""
    kwargs = dict(kwargs)
    verbose = bool(kwargs.pop("verbose", False))
    labels = {"step": kwargs.pop("log_step", None), "run_id": kwargs.get("run_id"), "run_date": kwargs.get("run_date")}
    try:
        configure_logging(verbose=verbose, log_format=kwargs.pop("log_format", None), labels=labels)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with sigterm_raises_terminated():
        try:
            result = component(**kwargs)
        except (InputError, StorageConflictError, RunConflict) as error:
            report_failure(f"error: {error}")
            return EXIT_BAD_INPUT
        except CheckFailed as error:
            report_failure(f"failed: {error}")
            return EXIT_CHECK_FAILED
        except Terminated:  # the components' finally blocks have cleaned up on the way here
            report_failure("terminated: stopped by SIGTERM")
            return EXIT_TERMINATED
        except Exception as error:  # the catch-all of a process entry point: report, then exit 1
            if verbose:
                log.exception("unexpected failure")
            report_failure(f"error: {_one_line(error)}" + ("" if verbose else " (--verbose shows the traceback)"))
            return EXIT_UNEXPECTED
    if result is not None:
        print(json.dumps(result, default=str))
    return EXIT_OK


def report_failure(line: str) -> None:
    """A failed step's one line on stderr: as it is with text logs, a record of severity ERROR with json."""
    json_handler = next(
        (handler for handler in logging.getLogger().handlers if isinstance(handler.formatter, JsonLogFormatter)), None
    )
    if json_handler is None:
        print(line, file=sys.stderr, flush=True)
        return
    record = logging.LogRecord("jobs", logging.ERROR, __file__, 0, line, None, None)
    json_handler.handle(record)


def main_of(parser_factory: Callable[[], argparse.ArgumentParser], component: Callable[..., Any]):
    """Builds a `main(argv)` that parses flags named like the component's keywords and runs it."""

    def main(argv: Sequence[str] | None = None) -> int:
        args = parser_factory().parse_args(argv)
        return run(component, vars(args))

    return main


@contextlib.contextmanager
def sigterm_raises_terminated() -> Iterator[None]:
    """While a job runs, SIGTERM (a scheduler's stop, a pod eviction) raises Terminated in the
    main thread, so every `finally` on the way out runs: staging removed, leases released."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _one_line(error: BaseException) -> str:
    """`Type: first line of the message`: an environment failure's report fits one line."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
