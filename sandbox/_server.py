"""The REPL server that runs inside a sandbox. Standard library only; Python 3.9+.

Protocol: frames of a 4-byte big-endian length and a UTF-8 JSON object, on the process's
original stdin/stdout. At start the server keeps private duplicates of fds 0 and 1 for frames,
then points fd 0 at /dev/null and fds 1 and 2 at a capture file, so nothing user code writes
(print, sys.stdout, os.write(1, ...), child processes) can reach the frame channel.

Host -> server: exec, set_var, set_var_file, get_var, callbacks, reply (to a call), ping,
interrupt (the host stopped waiting for request ``id``: stop it now, as the watchdog would).
Server -> host: ready (once), result (one per request), call (a callback; the calling thread
blocks for its reply).

A reader thread drains the input at all times: replies go to the thread waiting for them,
requests queue for the main thread, which runs them one at a time. Callbacks may be called from
several threads at once. Frames are written whole (short writes looped, SIGALRM blocked), so
the watchdog can never leave half a frame in the channel. The host trusts none of this: the
code in a cell can rewrite the server; the host checks every frame it receives.
"""

import io
import json
import os
import queue
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback

LIMIT = int(os.environ.get("HETERARCH_OUTPUT_LIMIT", "20000"))
MAX_FRAME = int(os.environ.get("HETERARCH_MAX_FRAME", str(64 * 1024 * 1024)))
#: Exit status when the host sent a frame that breaks the protocol.
PROTOCOL_EXIT = 70


class CappedWriter(io.TextIOBase):
    """Keeps the first and last LIMIT/2 characters; counts the rest."""

    def __init__(self, limit):
        self.limit = limit
        self.reset()

    def reset(self):
        self.head = []
        self.head_len = 0
        self.tail = ""
        self.dropped = 0

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        half = self.limit // 2
        if self.head_len < half:
            take = s[: half - self.head_len]
            self.head.append(take)
            self.head_len += len(take)
            s = s[len(take):]
        if s:
            combined = self.tail + s
            if len(combined) > half:
                self.dropped += len(combined) - half
                combined = combined[-half:]
            self.tail = combined
        return len(s)

    def flush(self):
        pass

    def value(self, extra=""):
        text = "".join(self.head)
        truncated = self.dropped > 0
        if truncated:
            text += "\n... [%d characters truncated] ...\n" % self.dropped
        text += self.tail
        if extra:
            text += extra
        return text, truncated


class FrameTooLarge(ValueError):
    pass


def cap_text(text, limit):
    """The first and last limit/2 characters of ``text``, with a marker between."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return "%s\n... [%d characters truncated] ...\n%s" % (
        text[:half], len(text) - 2 * half, text[-half:])


def describe(exc):
    """(type, message) of an exception, whatever its ``__str__`` does."""
    try:
        message = str(exc)
    except BaseException:
        message = "<the exception could not be printed>"
    return type(exc).__name__, cap_text(message, LIMIT)


def encode_capped(value, limit):
    """JSON bytes of ``value``; ValueError if over ``limit`` bytes or not valid text."""
    size = 0
    parts = []
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
    for chunk in encoder.iterencode(value):
        data = chunk.encode("utf-8")  # a lone surrogate is not text: UnicodeEncodeError
        size += len(data)
        if size > limit:
            raise ValueError("the value is over %d bytes as JSON: return a slice, a summary, "
                             "or write it to a file" % limit)
        parts.append(data)
    return b"".join(parts)


class Waiter:
    """One callback's wait for its reply: a locked lock the reader thread releases."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lock.acquire()
        self.frame = {}

    def wait(self):
        self.lock.acquire()  # interruptible: the watchdog's TimeoutError lands here

    def deliver(self, frame):
        self.frame = frame
        self.lock.release()


class Server:
    def __init__(self):
        self.fd_in = os.dup(0)
        self.fd_out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        fd, self.capture_path = tempfile.mkstemp(prefix=".heterarch-fd-")
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self.stdout = CappedWriter(LIMIT)
        self.stderr = CappedWriter(LIMIT)
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__,
                          "CallbackError": CallbackError}
        self.send_lock = threading.Lock()
        self.ids_lock = threading.Lock()
        self.call_ids = 0
        self.waiting = {}
        self.requests = queue.Queue()  # type: queue.Queue[dict[str, object]]
        self.armed = False
        self.main_thread = threading.get_ident()  # the one that runs requests
        self.running_id = None  # the request the main thread runs now
        self.interrupted = False
        signal.signal(signal.SIGALRM, self._alarm)

    # -- frames ------------------------------------------------------------------------------
    def _read_exactly(self, n):
        chunks = []
        while n:
            chunk = os.read(self.fd_in, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read_frame(self):
        header = self._read_exactly(4)
        if header is None:
            return None
        (size,) = struct.unpack(">I", header)
        if size == 0 or size > MAX_FRAME:
            self._protocol_error("frame of %d bytes (limit %d)" % (size, MAX_FRAME))
        body = self._read_exactly(size)
        if body is None:
            return None
        try:
            frame = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            self._protocol_error("malformed frame: %s" % str(exc)[:200])
        if not isinstance(frame, dict) or not isinstance(frame.get("id", 0), int):
            self._protocol_error("a frame must be an object with an integer id")
        return frame

    def _protocol_error(self, why):
        os.write(2, ("heterarch REPL: protocol violation from the host: %s\n" % why).encode())
        os._exit(PROTOCOL_EXIT)

    def send_bytes(self, body):
        if len(body) > MAX_FRAME:
            raise FrameTooLarge("a frame of %d bytes is over the %d-byte limit"
                                % (len(body), MAX_FRAME))
        data = struct.pack(">I", len(body)) + body
        # A whole frame or none: the watchdog's SIGALRM waits until the write is done.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            with self.send_lock:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd_out, view):]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def send(self, frame):
        body = json.dumps(frame, ensure_ascii=False, allow_nan=False, default=repr)
        self.send_bytes(body.encode("utf-8", "replace"))

    def read_loop(self):
        """The reader thread: replies to their waiters, requests to the main thread."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            frame = self.read_frame()
            if frame is None:  # the host is gone
                os._exit(0)
            if frame.get("op") == "reply":
                waiter = self.waiting.pop(frame.get("id"), None)
                if waiter is not None:  # else: its caller gave up (watchdog); drop it
                    waiter.deliver(frame)
            elif frame.get("op") == "interrupt":
                if self.armed and self.running_id == frame.get("id"):
                    self.interrupted = True
                    signal.pthread_kill(self.main_thread, signal.SIGALRM)
            else:
                self.requests.put(frame)

    # -- callbacks ---------------------------------------------------------------------------
    def make_callback(self, name):
        server = self

        def callback(*args, **kwargs):
            with server.ids_lock:
                server.call_ids += 1
                call_id = server.call_ids
            waiter = Waiter()
            server.waiting[call_id] = waiter
            try:
                server.send({"op": "call", "id": call_id, "name": name, "args": list(args),
                             "kwargs": kwargs})
                waiter.wait()
            finally:
                server.waiting.pop(call_id, None)
            frame = waiter.frame
            if frame.get("ok"):
                return frame.get("value")
            raise CallbackError(frame.get("error") or "callback failed")

        callback.__name__ = name
        return callback

    # -- requests ----------------------------------------------------------------------------
    def _alarm(self, signum, frame):
        if self.armed and self.interrupted:
            raise KeyboardInterrupt("the host cancelled the cell")
        if self.armed:
            raise TimeoutError("the cell exceeded its time limit")

    def with_watchdog(self, timeout, fn, *args):
        """Run ``fn`` with SIGALRM armed for ``timeout`` seconds (TimeoutError past it)."""
        self.interrupted = False
        self.armed = True
        if timeout > 0:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return fn(*args)
        finally:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _fd_output(self):
        try:
            size = os.path.getsize(self.capture_path)
            if not size:
                return "", False
            with open(self.capture_path, "rb") as f:
                half = LIMIT // 2
                if size <= LIMIT:
                    text = f.read().decode("utf-8", "replace")
                    truncated = False
                else:
                    head = f.read(half).decode("utf-8", "replace")
                    f.seek(size - half)
                    tail = f.read().decode("utf-8", "replace")
                    text = "%s\n... [%d bytes truncated] ...\n%s" % (head, size - LIMIT, tail)
                    truncated = True
            os.truncate(self.capture_path, 0)
            os.lseek(1, 0, os.SEEK_SET)
            os.lseek(2, 0, os.SEEK_SET)
            return text, truncated
        except OSError:
            return "", False

    def _run_cell(self, code):
        exec(compile(code, "<cell>", "exec"), self.namespace)

    def do_exec(self, frame):
        code = frame.get("code")
        timeout = float(frame.get("timeout") or 0)
        self.stdout.reset()
        self.stderr.reset()
        error = None
        started = time.perf_counter()
        try:
            self.with_watchdog(timeout, self._run_cell, code)
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                exc = RuntimeError("the cell called exit(); the REPL stays up")
            error_type, message = describe(exc)
            try:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-20:])
            except BaseException:
                tb = ""
            error = {"type": error_type, "message": message, "traceback": tb[-6000:]}
        duration = time.perf_counter() - started
        fd_text, fd_truncated = self._fd_output()
        stdout, out_truncated = self.stdout.value(fd_text)
        stderr, err_truncated = self.stderr.value()
        return {"stdout": stdout, "stderr": stderr, "error": error, "duration": duration,
                "stdout_truncated": out_truncated or fd_truncated,
                "stderr_truncated": err_truncated}

    def do_get_var(self, frame):
        name = frame["name"]
        if name not in self.namespace:
            raise KeyError("no variable %r in the sandbox" % name)
        limit = int(frame.get("limit") or MAX_FRAME - 1024)
        return self.with_watchdog(float(frame.get("timeout") or 0), encode_capped,
                                  self.namespace[name], limit)

    def handle(self, frame):
        op = frame.get("op")
        if op == "exec":
            return self.do_exec(frame)
        if op == "set_var":
            self.namespace[frame["name"]] = frame.get("value")
            return None
        if op == "set_var_file":
            with open(frame["path"], encoding="utf-8") as f:
                self.namespace[frame["name"]] = f.read()
            return None
        if op == "callbacks":
            for name in frame.get("names", []):
                self.namespace[name] = self.make_callback(name)
            return None
        if op == "ping":
            return "pong"
        raise ValueError("unknown op %r" % op)

    def respond(self, frame):
        request_id = frame.get("id")
        self.running_id = request_id
        try:
            if frame.get("op") == "get_var":
                value = self.do_get_var(frame)
                self.send_bytes(b'{"op":"result","id":%d,"ok":true,"value":%s}'
                                % (request_id, value))
                return
            value = self.handle(frame)
            self.send({"op": "result", "id": request_id, "ok": True, "value": value})
        except Exception as exc:
            error_type, message = describe(exc)
            self.send({"op": "result", "id": request_id, "ok": False,
                       "error": {"type": error_type, "message": message}})

    def serve(self):
        reader = threading.Thread(target=self.read_loop, name="heterarch-frames", daemon=True)
        reader.start()
        self.send({"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
        while True:
            self.respond(self.requests.get())


class CallbackError(Exception):
    """A host callback failed; the message says how."""


if __name__ == "__main__":
    Server().serve()
