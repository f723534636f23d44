"""``EngineLoop``: one thread owns the (not thread-safe) ``LLMEngine``; asyncio tasks talk to it by queues.

Teaches the bridge between a synchronous step loop and an asynchronous server (vLLM's
``AsyncLLMEngine``, nano-vllm's ``LLM`` loop behind a web server). The engine thread blocks on a
thread-safe inbox while the engine has nothing to step (no busy waiting); otherwise it takes every
queued command (add a request, abort one, run a function on the engine) between two steps, steps,
and hands each ``Output`` to its request's ``deliver``, which puts it on that request's
``asyncio.Queue`` with ``loop.call_soon_threadsafe``. :class:`RequestHandle` is the asyncio side:
submit, await Outputs, and abort on close unless the request finished. Stopping aborts whatever is in
flight (its waiters get a 503) and ends the thread. ``kvcache.serve`` puts HTTP in front of it.

References: vLLM ``engine/async_llm_engine.py`` (``AsyncLLMEngine``, ``RequestTracker``) and
``v1/engine/async_llm.py``; Python's ``asyncio`` "Concurrency and Multithreading" notes
(``call_soon_threadsafe``).
"""

import asyncio
import concurrent.futures
import contextlib
import queue
import threading

from kvcache.engine import LLMEngine
from kvcache.serve.api import APIError, Job

ACCEPTED = "accepted"  # the engine thread's first reply to a request it queued


class EngineLoop:
    """One thread that owns ``engine``: takes requests, aborts and calls from a queue, steps, delivers."""

    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sinks: dict[str, list] = {}  # request id -> [deliver(item), samples not finished yet]
        self._lock = threading.Lock()  # orders submit() against stop(): nothing is queued after "stop"
        self._thread: threading.Thread | None = None
        self.stats = {"requests": 0, "finished": 0, "aborted": 0}

    def start(self):
        assert self._thread is None, "the engine loop is already running"
        self._thread = threading.Thread(target=self._run, name="kvcache-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0):
        """Abort whatever is still in flight (its handlers get a 503) and end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._inbox.put(("stop",))
        if thread is not None:
            thread.join(timeout)
            assert not thread.is_alive(), f"the engine thread did not stop within {timeout} s"

    def _put(self, command: tuple):
        with self._lock:
            if self._thread is None:
                raise APIError("the server is not running (shutting down)", status=503)
            self._inbox.put(command)

    def submit(self, request_id: str, job: Job, deliver):
        """Queue ``job``; ``deliver`` gets ACCEPTED or an APIError, then the request's Outputs."""
        self._put(("add", request_id, job, deliver))

    def abort(self, request_id: str):
        with contextlib.suppress(APIError):  # stopped: everything was aborted already
            self._put(("abort", request_id))

    def call(self, fn, timeout: float = 60.0):
        """``fn(engine)`` on the engine thread between two steps (a consistent view); its result."""
        future = concurrent.futures.Future()
        self._put(("call", fn, future))
        return future.result(timeout)

    def _run(self):
        while True:
            commands = [] if self.engine.has_unfinished() else [self._inbox.get()]  # idle: sleep here
            with contextlib.suppress(queue.Empty):
                while True:
                    commands.append(self._inbox.get_nowait())
            if any(c[0] == "stop" for c in commands):
                self._abort_all("the server is shutting down", 503)
            for command in commands:
                self._handle(command)
            if any(c[0] == "stop" for c in commands):
                return
            if self.engine.has_unfinished():
                try:
                    outputs = self.engine.step()
                except Exception as err:  # a bug: fail what is in flight, keep serving
                    self._abort_all(f"the engine failed: {err!r}", 500)
                    continue
                for out in outputs:
                    self._deliver(out)

    def _handle(self, command: tuple):
        kind, *args = command
        if kind == "add":
            request_id, job, deliver = args
            if self._thread is None:  # stopping
                deliver(APIError("the server is shutting down", status=503))
                return
            try:
                self.engine.add_request(job.prompt_ids, job.params, request_id)
            except (TypeError, ValueError) as err:
                deliver(APIError(str(err), "prompt"))
                return
            self._sinks[request_id] = [deliver, job.params.n]
            self.stats["requests"] += 1
            deliver(ACCEPTED)
        elif kind == "abort":
            (request_id,) = args
            if self._sinks.pop(request_id, None) is not None and self.engine.abort(request_id):
                self.stats["aborted"] += 1
        elif kind == "call":
            fn, future = args
            try:
                future.set_result(fn(self.engine))
            except Exception as err:
                future.set_exception(err)

    def _deliver(self, out):
        sink = self._sinks.get(out.request_id)
        if sink is None:
            return
        sink[0](out)
        if out.finished:
            sink[1] -= 1
            if sink[1] == 0:
                del self._sinks[out.request_id]
                self.stats["finished"] += 1

    def _abort_all(self, message: str, status: int):
        for request_id, (deliver, _) in self._sinks.items():
            self.engine.abort(request_id)
            deliver(APIError(message, status=status))
        self.stats["aborted"] += len(self._sinks)
        self._sinks.clear()


class RequestHandle:
    """One request in flight, seen from the asyncio task that serves it: Outputs arrive on ``queue``."""

    def __init__(self, engine_loop: EngineLoop, request_id: str):
        self.engine_loop, self.id = engine_loop, request_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.unfinished = 0  # samples still in the engine: what close() would abort

    async def start(self, job: Job):
        """Submit ``job``; returns once the engine thread queued it, raises APIError if it refused."""
        loop = asyncio.get_running_loop()

        def deliver(item):  # called on the engine thread
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody is listening
                loop.call_soon_threadsafe(self.queue.put_nowait, item)

        self.engine_loop.submit(self.id, job, deliver)
        self.unfinished = job.params.n
        try:
            await self.next()  # ACCEPTED
        except BaseException:
            self.close()
            raise

    async def next(self):
        """The next Output of any of the request's samples."""
        item = await self.queue.get()
        if isinstance(item, APIError):
            self.unfinished = 0  # the engine thread dropped the request
            raise item
        if item is not ACCEPTED and item.finished:
            self.unfinished -= 1
        return item

    def close(self):
        """Abort the request unless it finished."""
        if self.unfinished:
            self.unfinished = 0
            self.engine_loop.abort(self.id)
