"""rl.budget_forcing: the thinking cap and the "Wait" extension, on models whose behaviour is known.

Hand-worked: a tiny GPT whose output head is zero emits vocabulary entry 0 at every greedy step, so
ordering a toy vocabulary chooses its behaviour: never stop thinking ("a": the cap forces the end after
exactly N tokens), stop at once ("</think>": exactly k "Wait"s are appended) or end the turn ("<eos>").
The expected replies are written out by hand. Reference: s1's procedure run one token at a time with
full forwards of ``GPT`` (no engine, no rounds, no prefix cache) on random tiny models, greedy, compared
token for token (every step's top-2 logit gap is > 1e-4, checked). SmolLM2: the cap holds with its real
tokenizer, where "</think>" is several tokens.
"""

import pytest
import torch

from evals.reference_free import self_consistency
from gpt import GPT, GPTConfig
from kvcache import LLMEngine
from rl.budget_forcing import budget_force, cut_at, cut_partial

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = [
    "a",
    "b",
    "c",
    "</think>",
    "<think>",
    "Wait",
    "<answer>",
    "</answer>",
    "<eos>",
    "x</",
    "think>",
    "q",
    "x",
]


class WordTokenizer:
    """One id per string of ``words``; encode is greedy longest match."""

    def __init__(self, words):
        self.words = list(words)
        self.eos_id = self.words.index("<eos>")

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            word = max((w for w in self.words if text.startswith(w, i)), key=len)
            ids.append(self.words.index(word))
            i += len(word)
        return ids

    def decode(self, ids) -> str:
        return "".join(self.words[t] for t in ids)


def tiny_gpt(vocab: int, seed: int = 0, zero_head: bool = False) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig.llama(vocab_size=vocab, block_size=96, n_layer=2, n_head=2, n_kv_head=1, n_embd=16,
                          ffn_hidden=32, tie_embeddings=False)  # fmt: skip
    model = GPT(cfg).eval()
    with torch.no_grad():
        if zero_head:
            model.lm_head.weight.zero_()  # every logit 0: greedy takes id 0
        else:
            model.lm_head.weight.mul_(30.0)  # decisive random preferences
    return model


def controlled(first: str):
    """An engine over a model that always emits ``first``, with WORDS reordered to put it at id 0."""
    words = [first] + [w for w in WORDS if w != first]
    tok = WordTokenizer(words)
    return LLMEngine(tiny_gpt(len(words), zero_head=True), block_size=4, tokenizer=tok), tok


def test_cap_forces_the_end_after_exactly_n_tokens():
    engine, tok = controlled("a")
    (r,) = budget_force(engine, [tok.encode("qq")], max_thinking_tokens=5, num_waits=2, max_answer_tokens=3)
    assert r.text == "<think>aaaaa</think><answer>aaa"
    assert (r.thinking_tokens, r.waits, r.forced, r.truncated) == (5, 0, True, False)
    assert [p.kind for p in r.pieces] == ["start", "think", "end", "answer_prefix", "answer"]
    assert r.pieces[2].forced and r.answer == "aaa"
    assert r.prompt_ids == tuple(tok.encode("qq"))
    assert r.token_ids == tok.encode(r.text)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_thinking_never_exceeds_the_cap(n):
    engine, tok = controlled("b")
    results = budget_force(engine, [tok.encode("q"), tok.encode("qq")], n, num_waits=3, max_answer_tokens=2)
    for r in results:
        think = [t for p in r.pieces if p.kind in ("think", "wait") for t in p.token_ids]
        assert len(think) == r.thinking_tokens == n
        assert r.text == "<think>" + "b" * n + "</think><answer>bb"


def test_early_stop_is_extended_by_exactly_k_waits():
    engine, tok = controlled("</think>")
    (r,) = budget_force(engine, [tok.encode("q")], max_thinking_tokens=10, num_waits=3, max_answer_tokens=3)
    assert r.text == "<think>WaitWaitWait</think><answer></think></think></think>"
    assert (r.thinking_tokens, r.waits, r.forced) == (3, 3, False)
    assert [p.kind for p in r.pieces] == ["start", "wait", "wait", "wait", "end", "answer_prefix", "answer"]
    (r,) = budget_force(engine, [tok.encode("q")], max_thinking_tokens=2, num_waits=3, max_answer_tokens=1)
    assert r.text == "<think>Wait</think><answer></think>"  # a second Wait would reach the cap
    assert (r.waits, r.forced) == (1, False)
    (r,) = budget_force(engine, [tok.encode("q")], max_thinking_tokens=10, num_waits=0, max_answer_tokens=1)
    assert r.text == "<think></think><answer></think>" and r.waits == 0


def test_end_of_turn_while_thinking_counts_as_stopping():
    engine, tok = controlled("<eos>")
    (r,) = budget_force(engine, [tok.encode("q")], max_thinking_tokens=10, num_waits=2, max_answer_tokens=5)
    assert r.text == "<think>WaitWait</think><answer><eos>"  # the answer ends at the end-of-turn token
    assert (r.waits, r.thinking_tokens) == (2, 2)


def test_cut_at_a_delimiter_inside_a_token():
    tok = WordTokenizer(WORDS)
    ids = [tok.words.index(w) for w in ("a", "b", "x</", "think>", "c")]  # the delimiter across two tokens
    assert cut_at(tok, ids, "</think>") == tok.encode("abx")  # "x</" is replaced by "x"
    assert cut_at(tok, tok.encode("ab</think>"), "</think>") == tok.encode("ab")
    assert cut_at(tok, tok.encode("ab"), "</think>") == tok.encode("ab")
    assert cut_partial(tok, ids[:3], "</think>") == tok.encode("abx")  # "ab" + "x</": "</" begins it
    assert cut_partial(tok, tok.encode("ab</think>"), "</think>") == tok.encode("ab</think>")  # whole: kept
    assert cut_partial(tok, tok.encode("abq"), "</think>") == tok.encode("abq")


def test_a_cap_inside_the_delimiter_drops_its_beginning():
    engine, tok = controlled("x</")  # the model writes "x</" forever: each token begins the delimiter
    (r,) = budget_force(engine, [tok.encode("q")], max_thinking_tokens=3, max_answer_tokens=1)
    assert r.text == "<think>x</x</x</think><answer>x</"
    assert (r.thinking_tokens, r.forced) == (3, True)


def reference(model, tok, prompt, n, k, max_answer):
    """s1 one token at a time (the delimiter is one token here): full forwards, no engine."""
    end, wait, eos = tok.encode("</think>"), tok.encode("Wait"), tok.eos_id
    ids, thinking, waits, gaps = list(prompt) + tok.encode("<think>"), 0, 0, []
    start = len(ids)

    def step():
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0][0, -1]  # (vocab,)
        top2 = logits.topk(2).values
        gaps.append(float(top2[0] - top2[1]))
        return int(logits.argmax())

    while True:
        if thinking >= n:
            text = tok.decode(ids[start:])
            partial = next(
                (d for d in ("</think", "</thin", "</thi", "</th", "</t", "</", "<") if text.endswith(d)), ""
            )
            if partial:  # the cap landed inside the delimiter: its beginning goes
                ids = ids[:start] + tok.encode(text[: -len(partial)])
            ids += end
            break
        t = step()
        if t in (end[0], eos):
            if waits < k and thinking + len(wait) < n:
                ids, thinking, waits = ids + wait, thinking + len(wait), waits + 1
                continue
            ids += end
            break
        ids.append(t)
        thinking += 1
    ids += tok.encode("<answer>")
    for _ in range(max_answer):
        ids.append(step())
        if ids[-1] == eos or tok.decode(ids).endswith("</answer>"):
            break
    return ids[len(prompt) :], waits, min(gaps)


def test_matches_s1_token_by_token_on_random_models():
    tok = WordTokenizer(WORDS)
    seen_waits = seen_forced = 0
    for seed in range(4):
        model = tiny_gpt(len(WORDS), seed)
        engine = LLMEngine(model, block_size=4, tokenizer=tok)
        ps = [tok.encode(t) for t in ("q", "qa", "abc", "cq")]
        for n, k in ((6, 2), (12, 1)):
            results = budget_force(engine, ps, n, k, max_answer_tokens=6)
            for p, r in zip(ps, results, strict=True):
                ref, waits, gap = reference(model, tok, p, n, k, 6)
                assert gap > 1e-4
                assert r.token_ids == ref
                assert r.waits == waits and r.thinking_tokens <= n
                seen_waits += r.waits > 0
                seen_forced += r.forced
    assert seen_waits > 0 and seen_forced > 0  # both behaviours were exercised


def test_majority_vote_is_self_consistency():
    engine, tok = controlled("a")
    rs = budget_force(engine, [tok.encode("q")] * 3, 2, max_answer_tokens=2)
    assert self_consistency([r.answer for r in rs]).majority == "aa"


def test_smollm2_cap_with_a_multi_token_delimiter(smollm2):
    model, tok = smollm2
    assert len(tok.encode("</think>")) > 1
    engine = LLMEngine(model, tokenizer=tok, num_blocks=64, max_num_seqs=2)
    chat = [[{"role": "user", "content": "What is 12 + 30? Think, then answer."}]]
    (r,) = budget_force(engine, chat, max_thinking_tokens=12, num_waits=1, max_answer_tokens=8)
    assert r.thinking_tokens <= 12
    assert r.text.startswith("<think>") and "</think><answer>" in r.text
    assert r.text.count("</think>") >= 1 and r.thinking_tokens == sum(
        len(p.token_ids) for p in r.pieces if p.kind in ("think", "wait")
    )


def test_bad_input():
    engine, _ = controlled("a")
    with pytest.raises(ValueError, match="max_thinking_tokens must be an int >= 0, got -1"):
        budget_force(engine, [[1]], -1)
    with pytest.raises(TypeError, match="prompt 0 must be a conversation"):
        budget_force(engine, ["text"], 3)
    with pytest.raises(ValueError, match="build the engine with tokenizer"):
        budget_force(LLMEngine(tiny_gpt(len(WORDS))), [[1]], 3)
