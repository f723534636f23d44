"""rag.pipeline: the prompt layout and citation parsing by hand, the context budget against the tokenizer,
and one end-to-end answer through a real LLMEngine on SmolLM2 (structure and accounting, not quality)."""

import pytest

from kvcache.engine import LLMEngine
from rag import qa
from rag.documents import Chunk, Hit
from rag.pipeline import SYSTEM_CLOSED, SYSTEM_RAG, Answer, RAGPipeline, parse_citations

pytestmark = pytest.mark.usefixtures("one_thread")


def _hit(doc_id: str, text: str, start: int = 0, score: float = 1.0) -> Hit:
    return Hit(Chunk(doc_id, start, start + len(text), text, doc_id), score)


class Fixed:
    """A retriever that returns the same hits for every query (and remembers the queries)."""

    def __init__(self, hits):
        self.hits, self.queries = hits, []

    def search(self, queries, k):
        self.queries.append(list(queries))
        return [self.hits[:k] for _ in queries]


@pytest.fixture(scope="module")
def engine(smollm2):
    model, tok = smollm2
    return LLMEngine(model, tokenizer=tok, memory_budget=2**28)


def test_prompt_layout_by_hand(engine):
    hits = [_hit("json.dumps", "Serialize obj."), _hit("json.loads", "Parse s.", start=7)]
    pipe = RAGPipeline(Fixed(hits), engine, k=2)
    assert pipe.build_messages("Which one?", hits) == [
        {"role": "system", "content": SYSTEM_RAG},
        {
            "role": "user",
            "content": "Sources:\n[1] (json.dumps@0) Serialize obj.\n\n[2] (json.loads@7) Parse s.\n\n"
            "Question: Which one?",
        },
    ]
    assert "[1], [2]" in SYSTEM_RAG
    closed = RAGPipeline(None, engine)
    assert closed.build_messages("Which one?", []) == [
        {"role": "system", "content": SYSTEM_CLOSED},
        {"role": "user", "content": "Question: Which one?"},
    ]
    assert RAGPipeline(None, engine, system="Be terse.").build_messages("Q?", [])[0]["content"] == "Be terse."


def test_context_trimming_fits_the_budget(engine):
    words = " ".join(f"word{i}" for i in range(400))
    hits = [_hit("a", "Short source one."), _hit("b", words), _hit("c", "Never shown.")]
    question = "What is it?"
    full = RAGPipeline(Fixed(hits), engine, k=3)
    budget = full.count_tokens(full._messages(question, [(hits[0], hits[0].chunk.text)])) + 120
    pipe = RAGPipeline(Fixed(hits), engine, k=3, max_context_tokens=budget)
    messages = pipe.build_messages(question, hits)
    n = len(engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    assert n <= budget and n > budget - 40  # the cut source fills most of what was left
    user = messages[1]["content"]
    assert "[1] (a@0) Short source one." in user and "(c@0)" not in user
    cut = user.split("[2] (b@0) ", 1)[1].split("\n\nQuestion:", 1)[0]
    assert cut.endswith(" ...") and words.startswith(cut[: -len(" ...")]) and len(cut) < len(words)
    next_word = words[len(cut) - len(" ...") :].split()[0]
    longer = pipe._messages(
        question, [(hits[0], hits[0].chunk.text), (hits[1], cut[:-4] + " " + next_word + " ...")]
    )
    assert pipe.count_tokens(longer) > budget  # the cut is the longest word prefix that fits
    tiny = RAGPipeline(
        Fixed(hits), engine, max_context_tokens=pipe.count_tokens(pipe._messages(question, [])) + 5
    )
    assert tiny.build_messages(question, hits)[1]["content"] == f"Question: {question}"  # no room: no sources
    with pytest.raises(ValueError, match="max_context_tokens"):
        RAGPipeline(Fixed(hits), engine, max_context_tokens=10).build_messages(question, hits)


@pytest.mark.parametrize(
    "raw, n, expected",
    [
        ("dumps [1]", 3, ("dumps", [1], [])),
        ("dumps [2][1].", 3, ("dumps.", [2, 1], [])),
        ("It is None [1, 3] and [1].", 3, ("It is None and.", [1, 3], [])),
        ("x [0] y [4] z [2]", 3, ("x y z", [2], [0, 4])),
        ("a [4] b [4]", 3, ("a b", [], [4])),
        ("no markers", 0, ("no markers", [], [])),
        ("broken [1 and [x] and [] and [1,]", 2, ("broken [1 and [x] and [] and [1,]", [], [])),
        ("[ 2 ] first", 2, ("first", [2], [])),
    ],
)
def test_parse_citations_by_hand(raw, n, expected):
    text, valid, invalid = parse_citations(raw, n)
    assert (text, valid, invalid) == expected


def test_answer_end_to_end_with_a_real_engine(engine):
    docs = {d.id: d for d in qa.build_corpus(modules=["json", "textwrap"])}
    questions = [
        q
        for q in qa.build_questions(list(docs.values()))
        if q.id in {"json.dumps:default:indent", "textwrap.dedent:which"}
    ]
    assert len(questions) == 2
    gold = {q.question: _hit(q.doc_id, docs[q.doc_id].text) for q in questions}

    class Gold:
        def search(self, queries, k):
            return [[gold[q]] for q in queries]

    texts = [q.question for q in questions]
    pipe = RAGPipeline(Gold(), engine, k=3)
    answers = pipe.answer(texts, max_tokens=12)
    closed = RAGPipeline(None, engine).answer(texts, max_tokens=12)
    for q, a, c in zip(texts, answers, closed, strict=True):
        assert isinstance(a, Answer) and a.question == q
        assert a.hits == (gold[q],) and a.sources == (gold[q].chunk.text,)
        assert a.prompt_tokens == pipe.count_tokens(pipe.build_messages(q, [gold[q]]))
        assert 1 <= a.completion_tokens <= 12 and a.latency_s > 0 and a.retrieval_s >= 0
        assert "<|im_end|>" not in a.raw and a.raw.strip()
        assert parse_citations(a.raw, 1)[0] == a.text
        assert set(a.citations) <= {gold[q].chunk.id}
        assert c.hits == () and c.sources == () and c.citations == ()
        assert c.prompt_tokens == pipe.count_tokens(RAGPipeline(None, engine).build_messages(q, []))
        assert c.prompt_tokens < a.prompt_tokens
    stopped = pipe.answer(texts, max_tokens=12, stop=(" ",))  # every reply ends at its first space
    for a, s in zip(answers, stopped, strict=True):
        assert " " not in s.raw and a.raw.startswith(s.raw) and s.completion_tokens <= a.completion_tokens
    with pytest.raises(TypeError, match="list of non-empty str"):
        pipe.answer(texts[0])
    with pytest.raises(ValueError, match="exceed the model context"):
        pipe.answer(texts, max_tokens=engine.max_model_len)
