"""rag.qa: the pystdlib corpus and questions, checked against the interpreter itself (inspect) and by hand."""

import ast
import importlib
import inspect
import json
import platform
import re

import pytest

from rag import qa
from rag.documents import Document

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus():
    docs = qa.build_corpus()
    return docs, qa.build_questions(docs)


def _function(doc: Document):
    return getattr(importlib.import_module(doc.meta["module"]), doc.meta["name"])


def test_corpus_is_deterministic_sorted_and_sized(corpus):
    docs, questions = corpus
    assert [d.id for d in docs] == sorted(d.id for d in docs)
    assert len({d.id for d in docs}) == len(docs)
    assert qa.build_corpus() == docs and qa.build_questions(docs) == questions
    kinds = {k: sum(q.kind == k for q in questions) for k in qa.KINDS}
    assert len(docs) >= 200 and kinds["which"] >= 150 and kinds["default"] >= 150, (len(docs), kinds)
    assert {d.meta["module"] for d in docs} == set(qa.DEFAULT_MODULES)


def test_documents_match_inspect(corpus):
    docs, _ = corpus
    for doc in docs:
        fn = _function(doc)
        name = doc.meta["name"]
        assert not name.startswith("_")
        assert doc.text.startswith(f"# {doc.id}\n\n`{name}{inspect.signature(fn)}`\n\n"), doc.id
        first_line = inspect.getdoc(fn).strip().splitlines()[0]
        assert first_line[:40] in doc.text, doc.id
        assert len(doc.text.split("\n\n", 2)[2]) <= qa.MAX_DOC_CHARS + 4, doc.id


def test_every_gold_is_verbatim_in_its_document(corpus):
    docs, questions = corpus
    by_id = {d.id: d for d in docs}
    for q in questions:
        assert all(g in by_id[q.doc_id].text for g in q.golds), q.id


def test_default_golds_are_the_interpreters_defaults(corpus):
    docs, questions = corpus
    by_id = {d.id: d for d in docs}
    for q in (q for q in questions if q.kind == "default"):
        param = q.id.rsplit(":", 1)[1]
        default = inspect.signature(_function(by_id[q.doc_id])).parameters[param].default
        assert ast.literal_eval(q.golds[0]) == default and type(ast.literal_eval(q.golds[0])) is type(default)
        assert default not in ("", b"") and not param.startswith("_")
        assert f"`{param}`" in q.question and f"`{q.doc_id}`" in q.question


def test_which_questions_hide_the_name_and_are_unambiguous(corpus):
    docs, questions = corpus
    which = [q for q in questions if q.kind == "which"]
    by_id = {d.id: d for d in docs}
    for q in which:
        name = by_id[q.doc_id].meta["name"]
        assert q.golds == (name, q.doc_id)
        assert not re.search(rf"(?<![\w.]){re.escape(name)}\b", q.question.split(": ", 1)[1]), q.question
    texts = [q.question for q in which]
    assert len(set(texts)) == len(texts)


def test_hand_worked_json_dumps(corpus):
    docs, questions = corpus
    doc = next(d for d in docs if d.id == "json.dumps")
    assert doc.title == "json.dumps" and doc.meta["module"] == "json"
    assert doc.text.startswith("# json.dumps\n\n`dumps(obj, *, skipkeys=False, ensure_ascii=True,")
    by_id = {q.id: q for q in questions}
    which = by_id["json.dumps:which"]
    assert which.question == (
        "Which function in the Python module `json` does the following: "
        "Serialize ``obj`` to a JSON formatted ``str``?"
    )
    assert which.golds == ("dumps", "json.dumps")
    indent = by_id["json.dumps:default:indent"]
    assert indent.question == "What is the default value of the `indent` parameter of `json.dumps`?"
    assert indent.golds == ("None",) and indent.doc_id == "json.dumps" and indent.kind == "default"
    assert by_id["json.dumps:default:skipkeys"].golds == ("False",)


def test_first_sentence_and_mask_by_hand():
    assert qa.first_sentence("Return the square root of x.\n\nMore.") == "Return the square root of x."
    assert qa.first_sentence("Split the path.  Then join it.") == "Split the path."
    assert qa.first_sentence("Spans\ntwo lines. Second.") == "Spans two lines."
    assert qa.first_sentence("Short.") is None
    assert qa.first_sentence("dumps(obj) -> str. Serialize it.") is None
    assert (
        qa.mask_name("Like dumps, but json.dumps(x) too", "dumps")
        == "Like this function, but this function(x) too"
    )
    assert qa.mask_name("dumps_all and undumps stay", "dumps") == "dumps_all and undumps stay"


def test_ambiguous_summaries_are_dropped():
    def doc(name, body, sig="(x)", defaults=None):
        meta = {"module": "m", "name": name, "signature": f"{name}{sig}", "defaults": defaults or {}}
        return Document(f"m.{name}", f"# m.{name}\n\n`{name}{sig}`\n\n{body}", f"m.{name}", meta)

    docs = [
        doc("a", "Return the thing for x.\n\nDetails."),
        doc("b", "Return the thing for x."),
        doc("c", "Compute c of x quickly.", "(x=3)", {"x": "3"}),
    ]
    questions = qa.build_questions(docs)
    assert [q.id for q in questions] == ["m.c:default:x", "m.c:which"]
    which = next(q for q in questions if q.kind == "which")
    assert (
        which.question
        == "Which function in the Python module `m` does the following: Compute this function of x quickly?"
    )


def test_split_is_seeded_disjoint_and_complete(corpus):
    _, questions = corpus
    train, test = qa.split(questions, 0.2, seed=0)
    assert len(test) == round(0.2 * len(questions)) and len(train) + len(test) == len(questions)
    assert {q.id for q in train}.isdisjoint({q.id for q in test})
    assert qa.split(list(reversed(questions)), 0.2, seed=0) == (train, test)
    assert qa.split(questions, 0.2, seed=1)[1] != test
    with pytest.raises(ValueError, match="test_fraction"):
        qa.split(questions, 1.0)


def test_version_names_the_exact_set(corpus):
    _, questions = corpus
    _, test = qa.split(questions, 0.2, seed=0)
    v = qa.version(test)
    assert v.startswith(f"py{platform.python_version()}-") and len(v.rsplit("-", 1)[1]) == 64
    assert qa.version(list(reversed(test))) == v
    changed = [test[0].__class__(**{**test[0].__dict__, "golds": ("other",)}), *test[1:]]
    assert qa.version(changed) != v and qa.version(test[1:]) != v


def test_save_load_round_trip(tmp_path, corpus):
    docs, questions = corpus
    qa.save(tmp_path / "q" / "test.jsonl", questions)
    qa.save_documents(tmp_path / "docs.jsonl", docs)
    assert qa.load(tmp_path / "q" / "test.jsonl") == questions
    loaded = qa.load_documents(tmp_path / "docs.jsonl")
    assert loaded == docs and [d.meta for d in loaded] == [d.meta for d in docs]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["docs.jsonl", "q", "test.jsonl"]
    first = json.loads((tmp_path / "q" / "test.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "question", "golds", "doc_id", "kind"}


def test_edit_facts_changes_the_documents_and_the_golds(corpus):
    docs, questions = corpus
    new_docs, edited = qa.edit_facts(docs, questions, n=20, seed=0)
    assert len(edited) == 20 and {q.kind for q in edited} == {"which", "default"}
    assert len(new_docs) == len(docs) and len({d.id for d in new_docs}) == len(docs)
    old_q = {q.id: q for q in questions}
    old_d, new_d = {d.id: d for d in docs}, {d.id: d for d in new_docs}
    assert len({old_q[q.id].doc_id for q in edited}) == 20  # one edit per document
    touched = {old_q[q.id].doc_id for q in edited}
    assert all(new_d[i] == old_d[i] for i in old_d if i not in touched)
    rebuilt = qa.build_questions(new_docs)
    for q in edited:
        old = old_q[q.id]
        assert q.question == old.question and q.golds != old.golds
        assert all(g in new_d[q.doc_id].text for g in q.golds)
        if q.kind == "which":
            assert old.doc_id not in new_d and q.doc_id not in old_d
            assert not any(o.doc_id == old.doc_id for o in questions if o.id != old.id)
            assert (q.question, q.golds, q.doc_id) in {(r.question, r.golds, r.doc_id) for r in rebuilt}
        else:
            param = q.id.rsplit(":", 1)[1]
            sig_line = new_d[q.doc_id].text.split("\n\n", 2)[1]
            assert f"{param}={old.golds[0]}" not in sig_line and f"{param}={q.golds[0]}" in sig_line
            assert next(r for r in rebuilt if r.id == q.id).golds == q.golds
    assert qa.edit_facts(docs, questions, n=20, seed=0) == (new_docs, edited)
    with pytest.raises(ValueError, match="n <="):
        qa.edit_facts(docs[:3], [q for q in questions if q.doc_id in {d.id for d in docs[:3]}], n=50)
