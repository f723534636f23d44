"""evals.text: reference-based text metrics, each identical to the library papers cite (Week 7.2).

A generation is compared with one or more human references by counting what they share: word n-grams
(BLEU), character n-grams (chrF), longest common subsequences (ROUGE-L) or answer tokens (SQuAD F1).

Reading order:

- ``tokenize_13a.py``: the ``13a`` and ``none`` tokenizers BLEU runs first;
- ``bleu.py``: clipped n-gram precision, brevity penalty, smoothing, corpus vs sentence BLEU and the
  sacreBLEU signature (Papineni et al. 2002; Post 2018; Chen & Cherry 2014);
- ``chrf.py``: chrF and chrF++, character (and word) n-gram F-beta (Popović 2015, 2017);
- ``porter.py``: the Porter stemmer, in its original, Martin Porter's and NLTK's variants (Porter 1980);
- ``rouge.py``: ROUGE-N, ROUGE-L (LCS) and ROUGE-Lsum (union LCS over sentences) (Lin 2004);
- ``squad.py``: exact match and token F1 after SQuAD's answer normalisation (Rajpurkar et al. 2016).
- ``semantic.py``: scoring by meaning instead of overlap: sentence-embedding cosine and BERTScore on
  our MiniLM (``gpt.encoders.bert``) (Reimers & Gurevych 2019; Zhang et al. 2020). It loads an
  encoder, so it is imported as ``evals.text.semantic``, not from here.

References the tests compare against: sacreBLEU 2.6 (BLEU, chrF, the 13a tokenizer), rouge_score 0.1.2
(ROUGE), NLTK's ``PorterStemmer``, the SQuAD v1.1 evaluation script's functions, sentence-transformers
and bert_score (pointed at the same local MiniLM).
"""

from evals.text.bleu import SACREBLEU_VERSION, BLEUConfig, BLEUScore, corpus_bleu, sentence_bleu
from evals.text.chrf import CHRFConfig, corpus_chrf, sentence_chrf
from evals.text.porter import PorterStemmer
from evals.text.rouge import Score, rouge
from evals.text.squad import exact_match, normalize_answer, squad_scores, token_f1
from evals.text.tokenize_13a import tokenize_13a

__all__ = [
    "SACREBLEU_VERSION",
    "BLEUConfig",
    "BLEUScore",
    "CHRFConfig",
    "PorterStemmer",
    "Score",
    "corpus_bleu",
    "corpus_chrf",
    "exact_match",
    "normalize_answer",
    "rouge",
    "sentence_bleu",
    "sentence_chrf",
    "squad_scores",
    "token_f1",
    "tokenize_13a",
]
