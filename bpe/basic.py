"""BasicTokenizer: byte-level BPE on the raw text, no pre-splitting; the algorithm with nothing else.

The simplest complete tokenizer (minbpe's ``basic.py``, karpathy/minbpe): UTF-8 bytes are the 256
base tokens, training runs ``train_reference`` on the whole text as a single sequence, encoding
replays the learned merges. Because nothing stops merges across spaces and punctuation, it learns
tokens such as ``"e t"`` or ``"dog."``; ``RegexTokenizer`` adds GPT-2's regex split to prevent that.
"""

from bpe.base import Tokenizer
from bpe.train_reference import train_reference


def check_vocab_size(vocab_size):
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < 256:
        raise ValueError(f"vocab_size={vocab_size} is below the 256 byte tokens; use vocab_size >= 256")


class BasicTokenizer(Tokenizer):
    kind = "basic"

    def train(self, text: str, vocab_size: int, verbose: bool = False):
        """Learn ``vocab_size - 256`` merges from ``text`` with the reference trainer."""
        if not isinstance(text, str):
            raise TypeError(f"train expects a str, got {type(text).__name__}")
        check_vocab_size(vocab_size)
        ids = tuple(self.byte_ids[b] for b in text.encode("utf-8"))
        self.merges = train_reference({ids: 1}, vocab_size - 256, verbose=verbose)
        self._rebuild()

    def encode_ordinary(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(
                f"encode expects a str, got {type(text).__name__}; decode bytes with .decode('utf-8') first"
            )
        return self._encode_chunk(text.encode("utf-8"))
