"""A word-level tokenizer trained on the demo corpus with the `tokenizers` library: no downloads."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[EOS]"]


def train_word_tokenizer(sentences: list[str]) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # The WordPiece decoder joins words with spaces and removes the space before punctuation ("Marn ." -> "Marn.").
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]", bos_token="[EOS]"
    )
