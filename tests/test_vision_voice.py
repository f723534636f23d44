"""vision.voice: a real Pipecat pipeline (PipelineWorker under a WorkerRunner) running SmolLM2 offline.

The reference is the model called directly on the same chat messages (greedy, so token-identical); the
hand-worked checks are an image whose pixels reach the model unchanged and a WAV whose duration, read with
the standard library's ``wave``, matches the audio frames the TTS stage pushed and espeak-ng's speaking rate.
"""

import shutil
import wave

import numpy as np
import pytest
import torch

pytest.importorskip("pipecat", reason="the voice extra: pip install 'llm-course[voice]'")

from pipecat.frames.frames import (
    EndFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserImageRawFrame,
)

from vision import voice
from vision.voice import ImageQuestion, run_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_NEW_TOKENS = 8
SYSTEM = "Answer in French."  # changes SmolLM2's greedy answer, so a dropped system prompt shows


@pytest.fixture(scope="module")
def smollm2_generate(smollm2):
    """``generate(messages) -> str``: SmolLM2's greedy reply through its chat template, stopped at eos."""
    model, tok = smollm2

    def generate(messages):
        idx = torch.tensor([tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)])
        with torch.no_grad():
            out = model.generate(idx, MAX_NEW_TOKENS, temperature=0.0, eos_id=tok.eos_id)
        new = out[0, idx.size(1) :].tolist()
        return tok.decode(new[: new.index(tok.eos_id)] if tok.eos_id in new else new)

    return generate


def echo(messages):
    """A stand-in model for tests about the pipeline itself: repeats the last user message."""
    return f"you said: {messages[-1]['content']}"


def test_pipeline_reply_equals_the_model_called_directly(smollm2_generate):
    question = "What is the capital of France?"
    conversation = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi, I am Ana."},
        {"role": "assistant", "content": "Hello Ana! How can I help?"},
        {"role": "user", "content": "What is my name?"},
    ]
    result = run_pipeline(smollm2_generate, [question, conversation], system=SYSTEM)

    direct = [
        smollm2_generate([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]),
        smollm2_generate(conversation),
    ]
    assert result.replies == direct
    assert all(r.strip() for r in direct), direct
    without_system = smollm2_generate([{"role": "user", "content": question}])
    assert direct[0] != without_system, "the system prompt had no effect: the check above would miss it"
    kinds = [type(f) for f in result.frames[1:]]  # after the StartFrame
    turn = [LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame]
    assert kinds == turn + turn + [EndFrame]
    assert result.wav_paths == []


def test_image_and_question_reach_the_model_as_the_same_pixels():
    img = np.zeros((2, 3, 3), dtype=np.uint8)  # (H, W, C): 2 rows, 3 columns
    img[:, 0] = (255, 0, 0)  # left column red
    img[1, 2] = (0, 0, 255)  # bottom-right pixel blue
    seen = []

    def describe(messages):
        seen.append(messages)
        if "image" not in messages[-1]:
            return f"text only: {messages[-1]['content']}"
        pixels = messages[-1]["image"]  # (H, W, C)
        red = int((pixels == (255, 0, 0)).all(-1).sum())
        return f"{pixels.shape[1]}x{pixels.shape[0]} image, {red} red pixels: {messages[-1]['content']}"

    result = run_pipeline(describe, ["hello", ImageQuestion(img, "how many red pixels?")])
    assert result.replies == ["text only: hello", "3x2 image, 2 red pixels: how many red pixels?"]
    assert np.array_equal(seen[1][-1]["image"], img)
    assert "image" not in seen[0][-1]


def test_a_streamed_reply_is_one_frame_per_chunk():
    chunks = ["Hel", "lo", ", wor", "ld"]
    result = run_pipeline(lambda messages: iter(chunks), ["hi"])
    assert [f.text for f in result.frames if isinstance(f, LLMTextFrame)] == chunks
    assert result.replies == ["Hello, world"]


def test_bad_input_is_rejected_with_a_message():
    with pytest.raises(ValueError, match="empty"):
        run_pipeline(echo, ["   "])
    with pytest.raises(TypeError, match="list of turns"):
        run_pipeline(echo, "a bare string")
    with pytest.raises(TypeError, match="a turn must be"):
        run_pipeline(echo, [42])
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        ImageQuestion(np.zeros((4, 4, 4), np.uint8), "what colour?")
    with pytest.raises(ValueError, match="12 RGB bytes, got 11"):
        voice.image_from_frame(UserImageRawFrame(image=bytes(11), size=(2, 2), format="RGB", text="q"))
    with pytest.raises(TypeError, match="callable"):
        voice.ModelReply("not a model")
    # Errors raised inside the running pipeline travel upstream as ErrorFrames and are raised at the end.
    with pytest.raises(ValueError, match="non-empty user message"):
        run_pipeline(echo, [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]])

    def broken(messages):
        raise RuntimeError("prompt too long for the context window")

    with pytest.raises(RuntimeError, match="prompt too long"):
        run_pipeline(broken, ["hi"])


def test_tts_without_espeak_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(voice, "espeak_available", lambda: False)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        voice.EspeakTTS(tmp_path)


NO_ESPEAK = "espeak-ng not installed (apt-get install espeak-ng)"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason=NO_ESPEAK)
def test_tts_writes_a_wav_whose_duration_matches_its_audio_and_the_speaking_rate(tmp_path):
    long = "one two three four five six seven eight nine ten eleven twelve"
    result = run_pipeline(echo, [long, "yes"], tts_dir=tmp_path)
    assert result.replies == [f"you said: {long}", "you said: yes"]
    assert [p.parent for p in result.wav_paths] == [tmp_path, tmp_path]

    durations = []
    audio = [f for f in result.frames if isinstance(f, TTSAudioRawFrame)]
    assert len(audio) == 2
    for path, frame in zip(result.wav_paths, audio, strict=True):
        with wave.open(str(path), "rb") as w:
            assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
            seconds = w.getnframes() / w.getframerate()
            assert frame.sample_rate == w.getframerate()
            assert frame.num_frames == w.getnframes()  # the frame carries exactly the file's samples
        durations.append(seconds)
    words = len(result.replies[0].split())  # 14 words at espeak-ng's 175 words per minute: 4.8 s
    expected = words / 175 * 60
    assert 0.5 * expected < durations[0] < 2 * expected, (durations, expected)
    assert durations[1] < durations[0] / 2, durations
    kinds = [type(f) for f in result.frames]
    assert kinds.count(TTSStartedFrame) == kinds.count(TTSStoppedFrame) == 2
