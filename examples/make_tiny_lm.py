"""Make a small starting checkpoint and text files for the causal-LM example, with no downloads.

Writes ``OUT/model`` (a Llama-style model and a byte-level BPE tokenizer trained here on CPython's
``pydoc_data.topics`` text) and ``OUT/train.txt`` / ``OUT/validation.txt``.

    python examples/make_tiny_lm.py --out /tmp/tiny-lm
"""

from __future__ import annotations

import argparse
import os
from pydoc_data.topics import topics

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=512)
    args = parser.parse_args()

    lines = [line for text in topics.values() for line in text.splitlines() if line.strip()]
    split = int(len(lines) * 0.95)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train.txt"), "w") as handle:
        handle.write("\n".join(lines[:split]))
    with open(os.path.join(args.out, "validation.txt"), "w") as handle:
        handle.write("\n".join(lines[split:]))

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(lines, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model_dir = os.path.join(args.out, "model")
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    print(f"wrote {model_dir}, {args.out}/train.txt, {args.out}/validation.txt")


if __name__ == "__main__":
    main()
