"""A Pipecat pipeline that runs our own model: text (or an image and a question) in, reply frames out.

A voice agent is a chain of frame processors: transport in -> speech-to-text -> LLM -> text-to-speech ->
transport out. Pipecat (github.com/pipecat-ai/pipecat) moves typed frames (``TextFrame``, ``LLMContextFrame``,
``TTSAudioRawFrame``, ``EndFrame``, ...) down that chain, one asyncio task per processor. Here the chain is
offline and needs no API key:

- the worker's own source queues the input frames (a ``TextFrame``, a ``UserImageRawFrame`` with a question,
  or an ``LLMContextFrame`` with a whole conversation);
- :class:`ModelReply` turns each into chat messages, calls a plain ``generate(messages) -> str`` (or an
  iterator of text chunks, streamed one ``LLMTextFrame`` each) and brackets the reply with
  ``LLMFullResponseStartFrame`` / ``LLMFullResponseEndFrame``, as Pipecat's hosted LLM services do;
- :class:`EspeakTTS` (optional) speaks each full reply with Debian's ``espeak-ng`` into a WAV file and pushes
  the audio as ``TTSAudioRawFrame``;
- :class:`FrameCollector` is the sink that keeps every frame reaching the end.

:func:`run_pipeline` wires them into a ``Pipeline`` and runs it as a ``PipelineWorker`` under a
``WorkerRunner`` (Pipecat >= 1.3's names for ``PipelineTask`` and ``PipelineRunner``). A real agent swaps
the source and sink for a transport (WebRTC, a phone line), puts a speech-to-text service in front of
:class:`ModelReply` and a hosted TTS after it; the middle stays the same.

Pipecat is an optional extra, imported by this module only (``pip install 'llm-course[voice]'``); the
model side is any callable, so this file needs nothing from the packages that build the model.
"""

import asyncio
import shutil
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    from pipecat.frames.frames import (
        EndFrame,
        ErrorFrame,
        Frame,
        LLMContextFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        TextFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
        UserImageRawFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"vision.voice needs Pipecat ({e}): pip install 'llm-course[voice]' (or pip install pipecat-ai)"
    ) from e

Message = dict  # {"role": ..., "content": str} plus, for an image turn, "image": (H, W, 3) uint8 array
Generate = Callable[[list[Message]], "str | Iterable[str]"]


@dataclass
class ImageQuestion:
    """An image (H, W, 3) uint8 RGB and a question about it: one ``UserImageRawFrame``."""

    image: np.ndarray
    question: str

    def __post_init__(self):
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"image must be a (H, W, 3) uint8 RGB array, got {got}")
        if not self.question.strip():
            raise ValueError("the question about the image is empty")


def image_from_frame(frame: "UserImageRawFrame") -> np.ndarray:
    """The (H, W, 3) uint8 array in an RGB ``ImageRawFrame`` (whose ``size`` is (width, height))."""
    if frame.format != "RGB":
        raise ValueError(f"image frames must be raw 'RGB' bytes, got format={frame.format!r}")
    W, H = frame.size
    if len(frame.image) != H * W * 3:
        raise ValueError(
            f"an image of size (W, H)=({W}, {H}) needs {H * W * 3} RGB bytes, got {len(frame.image)}"
        )
    return np.frombuffer(frame.image, dtype=np.uint8).reshape(H, W, 3)  # (H, W, C)


def to_frame(item: "str | ImageQuestion | Sequence[Message]") -> Frame:
    """The input frame for one turn: text, an image with a question, or a whole conversation."""
    if isinstance(item, str):
        if not item.strip():
            raise ValueError("a text turn is empty: pass the user's words")
        return TextFrame(text=item)
    if isinstance(item, ImageQuestion):
        H, W, _ = item.image.shape
        return UserImageRawFrame(
            image=np.ascontiguousarray(item.image).tobytes(), size=(W, H), format="RGB", text=item.question
        )
    if isinstance(item, Sequence) and item and all(isinstance(m, dict) and "role" in m for m in item):
        return LLMContextFrame(context=LLMContext(messages=list(item)))
    raise TypeError(
        f"a turn must be a str, an ImageQuestion or a list of {{'role', 'content'}} dicts, got {item!r:.80}"
    )


class ModelReply(FrameProcessor):
    """Our model as a Pipecat LLM stage: user frames in, ``LLMTextFrame`` replies out.

    History is not kept here: Pipecat's context aggregators do that and send an ``LLMContextFrame`` with
    the whole conversation, which this stage answers as it is. ``system`` is prepended to single turns.
    A turn that cannot be answered (empty text, a malformed image) becomes an ``ErrorFrame`` upstream.
    """

    def __init__(self, generate: Generate, *, system: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not callable(generate):
            raise TypeError(f"generate must be a callable messages -> str, got {type(generate).__name__}")
        self._generate = generate
        self._system = system

    def _turn(self, user: Message) -> list[Message]:
        return ([{"role": "system", "content": self._system}] if self._system else []) + [user]

    def messages_for(self, frame: Frame) -> list[Message] | None:
        """The chat messages a frame asks about, or None for frames this stage passes on."""
        if isinstance(frame, UserImageRawFrame):
            question = frame.text or ""
            if not question.strip():
                raise ValueError("an image frame needs a question in its text field")
            return self._turn({"role": "user", "content": question, "image": image_from_frame(frame)})
        if isinstance(frame, LLMContextFrame):
            messages = list(frame.context.get_messages())
            if not messages or messages[-1].get("role") != "user" or not messages[-1].get("content"):
                raise ValueError("an LLMContextFrame must end with a non-empty user message to answer")
            return messages
        if isinstance(frame, TextFrame) and not isinstance(frame, LLMTextFrame):
            if not frame.text.strip():
                raise ValueError("an empty TextFrame reached the model: there is nothing to answer")
            return self._turn({"role": "user", "content": frame.text})
        return None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        try:
            messages = self.messages_for(frame) if direction == FrameDirection.DOWNSTREAM else None
        except ValueError as e:
            await self.push_error(str(e), exception=e)
            return
        if messages is None:
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        try:
            reply = await asyncio.to_thread(self._generate, messages)  # the model runs off the event loop
            if isinstance(reply, str):
                await self.push_frame(LLMTextFrame(text=reply))
            else:
                chunks = iter(reply)
                while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                    await self.push_frame(LLMTextFrame(text=chunk))
        except Exception as e:  # the model is user code: report it as Pipecat does, keep the pipeline up
            await self.push_error(f"generate failed: {type(e).__name__}: {e}", exception=e)
        await self.push_frame(LLMFullResponseEndFrame())


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on PATH (Debian: ``apt-get install espeak-ng``)."""
    return shutil.which("espeak-ng") is not None


class EspeakTTS(FrameProcessor):
    """Text-to-speech with the ``espeak-ng`` program: each reply becomes ``out_dir/reply-<n>.wav``.

    Text frames between ``LLMFullResponseStartFrame`` and ``LLMFullResponseEndFrame`` are joined and spoken
    once the reply ends (a hosted TTS would stream sentence by sentence). The WAV's 16-bit mono PCM is pushed
    as one ``TTSAudioRawFrame`` between ``TTSStartedFrame`` and ``TTSStoppedFrame``; the text frames pass on.
    """

    def __init__(self, out_dir: str | Path, *, voice: str = "en", words_per_minute: int = 175, **kwargs):
        super().__init__(**kwargs)
        if not espeak_available():
            raise RuntimeError("EspeakTTS needs the espeak-ng program: apt-get install espeak-ng")
        if not 80 <= words_per_minute <= 450:
            raise ValueError(f"words_per_minute={words_per_minute} is outside espeak-ng's 80..450")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.voice, self.words_per_minute = voice, words_per_minute
        self.wav_paths: list[Path] = []
        self._text: list[str] = []

    async def speak(self, text: str) -> Path:
        """Run espeak-ng on ``text`` and return the WAV it wrote."""
        path = self.out_dir / f"reply-{len(self.wav_paths)}.wav"
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "-v", self.voice, "-s", str(self.words_per_minute), "-w", str(path), "--", text,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            msg = err.decode(errors="replace").strip()
            raise RuntimeError(f"espeak-ng exited with {proc.returncode}: {msg}")
        self.wav_paths.append(path)
        return path

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseStartFrame):
            self._text = []
        elif isinstance(frame, TextFrame) and direction == FrameDirection.DOWNSTREAM:
            self._text.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and "".join(self._text).strip():
            await self.push_frame(frame, direction)
            try:
                path = await self.speak("".join(self._text))
            except RuntimeError as e:
                await self.push_error(str(e), exception=e)
                return
            with wave.open(str(path), "rb") as w:
                assert w.getsampwidth() == 2, f"espeak-ng wrote {8 * w.getsampwidth()}-bit audio, expected 16"
                audio, rate, channels = w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
            await self.push_frame(TTSStartedFrame())
            await self.push_frame(TTSAudioRawFrame(audio=audio, sample_rate=rate, num_channels=channels))
            await self.push_frame(TTSStoppedFrame())
            return
        await self.push_frame(frame, direction)


class FrameCollector(FrameProcessor):
    """The sink: keeps every frame that reaches the end of the pipeline (downstream), then passes it on.

    ``turn_done`` is set when a frame of type ``turn_end`` arrives: the end of a reply (or of its speech).
    """

    def __init__(self, turn_end: type[Frame] = LLMFullResponseEndFrame, **kwargs):
        super().__init__(**kwargs)
        self.frames: list[Frame] = []
        self.turn_end = turn_end
        self.turn_done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            if isinstance(frame, self.turn_end):
                self.turn_done.set()
        await self.push_frame(frame, direction)


@dataclass
class PipelineResult:
    """What came out: one reply string per input turn, every collected frame, and the WAV files."""

    replies: list[str]
    frames: list = field(repr=False)
    wav_paths: list[Path]


def replies_from(frames: Sequence[Frame]) -> list[str]:
    """Join the ``LLMTextFrame`` chunks between each pair of response start/end frames."""
    replies, current = [], None
    for f in frames:
        if isinstance(f, LLMFullResponseStartFrame):
            current = []
        elif isinstance(f, LLMFullResponseEndFrame) and current is not None:
            replies.append("".join(current))
            current = None
        elif isinstance(f, LLMTextFrame) and current is not None:
            current.append(f.text)
    return replies


async def arun_pipeline(
    generate: Generate,
    turns: Sequence["str | ImageQuestion | Sequence[Message]"],
    *,
    system: str | None = None,
    tts_dir: str | Path | None = None,
) -> PipelineResult:
    """Run ``turns`` through source -> :class:`ModelReply` -> [:class:`EspeakTTS`] -> sink, to the end.

    The pipeline drains first; then the first error a stage reported is raised (ValueError for bad input).
    """
    if isinstance(turns, (str, ImageQuestion)) or not turns:
        raise TypeError("turns must be a non-empty list of turns (wrap a single prompt in a list)")
    frames = [to_frame(t) for t in turns]  # validated before anything starts
    tts = EspeakTTS(tts_dir) if tts_dir is not None else None
    sink = FrameCollector(turn_end=TTSStoppedFrame if tts else LLMFullResponseEndFrame)
    stages = [ModelReply(generate, system=system), *([tts] if tts else []), sink]
    worker = PipelineWorker(Pipeline(stages), cancel_on_idle_timeout=False, enable_rtvi=False)
    started = asyncio.Event()
    errors: list[ErrorFrame] = []

    @worker.event_handler("on_pipeline_started")
    async def _on_started(_worker, _frame):
        started.set()

    @worker.event_handler("on_pipeline_error")
    async def _on_error(_worker, frame):
        errors.append(frame)
        sink.turn_done.set()

    async def feed():
        # One turn at a time, as a user waits for the answer: an image arrives as a SystemFrame, which
        # Pipecat lets overtake queued data frames, so queuing every turn at once could reorder replies.
        await started.wait()
        for frame in frames:
            sink.turn_done.clear()
            await worker.queue_frame(frame)
            await sink.turn_done.wait()
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), feed())
    if errors:  # the first error, as raised where it happened when it was an exception
        raise errors[0].exception or ValueError(errors[0].error)
    return PipelineResult(replies_from(sink.frames), sink.frames, tts.wav_paths if tts else [])


def run_pipeline(generate: Generate, turns, *, system: str | None = None, tts_dir=None) -> PipelineResult:
    """Synchronous :func:`arun_pipeline` for scripts, tests and notebooks without a running event loop."""
    return asyncio.run(arun_pipeline(generate, turns, system=system, tts_dir=tts_dir))
