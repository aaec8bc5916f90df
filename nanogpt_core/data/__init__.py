"""Text in, tokens out: the built-in corpus and user files, the BPE tokenizer, downloads, and the batch loader."""
