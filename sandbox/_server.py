"""The REPL server that runs inside a sandbox. Standard library only; Python 3.9+.

Protocol: frames of a 4-byte big-endian length and a UTF-8 JSON object, on the process's
original stdin/stdout. At start the server keeps private duplicates of fds 0 and 1 for frames,
then points fd 0 at /dev/null and fds 1 and 2 at a capture file, so nothing user code writes
(print, sys.stdout, os.write(1, ...), child processes) can reach the frame channel.

Host -> server: exec, set_var, set_var_file, get_var, reply (to a call), ping.
Server -> host: result (one per request), call (a callback; the server blocks for its reply).
"""

import io
import json
import os
import signal
import struct
import sys
import tempfile
import time
import traceback

LIMIT = int(os.environ.get("HETERARCH_OUTPUT_LIMIT", "20000"))


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


class Server:
    def __init__(self):
        self.frames_in = os.fdopen(os.dup(0), "rb", buffering=0)
        self.frames_out = os.fdopen(os.dup(1), "wb", buffering=0)
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
        self.call_ids = 0
        signal.signal(signal.SIGALRM, self._alarm)

    # -- frames ------------------------------------------------------------------------------
    def read_frame(self):
        header = self._read_exactly(4)
        if header is None:
            return None
        (size,) = struct.unpack(">I", header)
        body = self._read_exactly(size)
        if body is None:
            return None
        return json.loads(body.decode("utf-8"))

    def _read_exactly(self, n):
        chunks = []
        while n:
            chunk = self.frames_in.read(n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def send(self, frame):
        body = json.dumps(frame, default=repr).encode("utf-8")
        self.frames_out.write(struct.pack(">I", len(body)) + body)

    # -- callbacks ---------------------------------------------------------------------------
    def make_callback(self, name):
        server = self

        def callback(*args, **kwargs):
            server.call_ids += 1
            call_id = server.call_ids
            server.send({"op": "call", "id": call_id, "name": name, "args": list(args),
                         "kwargs": kwargs})
            while True:
                frame = server.read_frame()
                if frame is None:
                    raise SystemExit(0)
                if frame.get("op") == "reply" and frame.get("id") == call_id:
                    if frame.get("ok"):
                        return frame.get("value")
                    raise CallbackError(frame.get("error", "callback failed"))
                server.send({"op": "result", "id": frame.get("id"), "ok": False,
                             "error": {"type": "Busy", "message": "a cell is running"}})

        callback.__name__ = name
        return callback

    # -- requests ----------------------------------------------------------------------------
    def _alarm(self, signum, frame):
        raise TimeoutError("cell exceeded its time limit")

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

    def do_exec(self, frame):
        code = frame.get("code")
        timeout = float(frame.get("timeout") or 0)
        self.stdout.reset()
        self.stderr.reset()
        error = None
        started = time.perf_counter()
        if timeout > 0:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            compiled = compile(code, "<cell>", "exec")
            exec(compiled, self.namespace)
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                exc = RuntimeError("the cell called exit(); the REPL stays up")
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            error = {"type": type(exc).__name__, "message": str(exc),
                     "traceback": "".join(tb[-20:])[-6000:]}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        duration = time.perf_counter() - started
        fd_text, fd_truncated = self._fd_output()
        stdout, out_truncated = self.stdout.value(fd_text)
        stderr, err_truncated = self.stderr.value()
        return {"stdout": stdout, "stderr": stderr, "error": error, "duration": duration,
                "stdout_truncated": out_truncated or fd_truncated,
                "stderr_truncated": err_truncated}

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
        if op == "get_var":
            name = frame["name"]
            if name not in self.namespace:
                raise KeyError("no variable %r in the sandbox" % name)
            value = self.namespace[name]
            json.dumps(value)  # raises TypeError if it cannot travel
            return value
        if op == "callbacks":
            for name in frame.get("names", []):
                self.namespace[name] = self.make_callback(name)
            return None
        if op == "ping":
            return "pong"
        raise ValueError("unknown op %r" % op)

    def serve(self):
        self.send({"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
        while True:
            frame = self.read_frame()
            if frame is None:
                return
            try:
                value = self.handle(frame)
                self.send({"op": "result", "id": frame.get("id"), "ok": True, "value": value})
            except Exception as exc:
                self.send({"op": "result", "id": frame.get("id"), "ok": False,
                           "error": {"type": type(exc).__name__, "message": str(exc)}})


class CallbackError(Exception):
    """A host callback failed; the message says how."""


if __name__ == "__main__":
    Server().serve()
