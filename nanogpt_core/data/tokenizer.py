"""The BPE tokenizer, nanochat's recipe: trained with `rustbpe`, run with `tiktoken`.

rustbpe learns the merges fast (Rust, parallel); tiktoken encodes fast (Rust, threaded batches). The learned table
(byte string -> rank) plus the split pattern and the special tokens is the whole tokenizer, so that is what we save:
as plain text and JSON, never pickle, because a checkpoint should be safe to open and readable by a person.

Saved files (in one directory, next to the model in a checkpoint):
- `tokenizer.json`: format version, split pattern, special tokens and their ids, vocab size, fingerprint;
- `tokenizer.tiktoken`: the mergeable ranks, one `base64(bytes) rank` line each (tiktoken's own text format);
- `token_bytes.json`: the UTF-8 byte length of every token id (0 for special tokens), for bits per byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import tiktoken
import torch

from nanogpt_core.errors import CheckpointError, ConfigError
from nanogpt_core.files import write_text_atomic

# GPT-4's split pattern with numbers split into runs of at most two digits (nanochat's choice for small vocabularies).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
# nanochat's special tokens; they take the ids right after the mergeable ranks. Only <|bos|> is used in pretraining.
SPECIAL_TOKENS = (
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
)
BOS = "<|bos|>"
# Small enough that the embedding and the output layer of a CPU demo model stay cheap, large enough that a token is
# about a word piece (3.8 bytes per token on the built-in corpus). Training it there takes ~0.3 s on 2 CPU cores.
DEFAULT_VOCAB_SIZE = 4096
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

FORMAT = "nanogpt-tokenizer"
FORMAT_VERSION = 1
CONFIG_FILE = "tokenizer.json"
RANKS_FILE = "tokenizer.tiktoken"
TOKEN_BYTES_FILE = "token_bytes.json"
TOKENIZER_FILES = (CONFIG_FILE, RANKS_FILE, TOKEN_BYTES_FILE)
TOKENIZER_DIR = "tokenizer"  # the folder a run and every checkpoint keep their tokenizer in
DAMAGED_FIX = ("restore it from a copy (every checkpoint folder of a run holds one, in tokenizer/), or train a new "
               "one with `nanogpt tokenizer train`")


def has_tokenizer(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def tokenizer_folder(path: str | Path) -> Path:
    """A tokenizer folder as given, or the `tokenizer/` inside a run or checkpoint folder given instead."""
    folder = Path(path)
    if not has_tokenizer(folder) and has_tokenizer(folder / TOKENIZER_DIR):
        return folder / TOKENIZER_DIR
    return folder


def check_vocabulary(mergeable_ranks: dict[bytes, int], pattern: str, special_tokens: dict[str, int]) -> None:
    """ValueError unless the ranks are what byte-level BPE needs (`check_ranks`), the pattern is a string, and the
    special tokens sit on distinct ids after the ranks: so that tiktoken never sees a vocabulary it panics on."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"the split pattern must be a non-empty string, got {pattern!r}")
    check_ranks(mergeable_ranks)
    n = len(mergeable_ranks)
    specials = list(special_tokens.values()) if isinstance(special_tokens, dict) else None
    if specials is None or not all(isinstance(k, str) for k in special_tokens) or len(set(specials)) != len(specials) \
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= n for i in specials):
        raise ValueError(f"special tokens must map names to distinct ids from {n} up, got {special_tokens}")


def check_ranks(mergeable_ranks: dict[bytes, int]) -> None:
    """Distinct byte strings with ranks 0..n-1, each once (a duplicate makes tiktoken's constructor panic), every
    single byte among them (a missing one makes encoding panic); ValueError saying what is wrong otherwise."""
    if not all(isinstance(t, bytes) for t in mergeable_ranks):
        raise ValueError("every mergeable token must be a byte string")
    ids = sorted(mergeable_ranks.values())
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in ids) or ids != list(range(len(ids))):
        first = next((r for i, r in enumerate(ids) if r != i), ids[-1] if ids else None)
        raise ValueError(f"ranks must be 0..{len(ids) - 1}, each once (found {first!r} out of place)")
    missing = [b for b in range(256) if bytes([b]) not in mergeable_ranks]
    if missing:
        raise ValueError(f"the single byte 0x{missing[0]:02x} has no rank (byte-level BPE needs all 256)")


def _read_ranks(path: Path) -> dict[bytes, int]:
    """`base64(token) rank` lines (tiktoken's own text format) -> {token: rank}; ValueError naming a bad line."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        try:
            token, rank = line.split()
            token_bytes = base64.b64decode(token, validate=True)
            ranks[token_bytes] = int(rank)
        except ValueError as exc:
            raise ValueError(f"line {number} is not 'base64-token rank' ({line[:40]!r}: {exc})") from None
        if len(ranks) != number:
            raise ValueError(f"line {number} repeats token {token}")
    return ranks


def _describe(exc: BaseException) -> str:
    """The first line of the error, with its type unless it is a plain ValueError of ours."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if type(exc) is ValueError and text else f"{type(exc).__name__}: {text}".rstrip(": ")


class Tokenizer:
    """A tiktoken encoding with nanochat's special tokens, plus what training needs from it (bos id, byte lengths)."""

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str, special_tokens: dict[str, int]):
        if BOS not in special_tokens:
            raise ConfigError(f"a tokenizer needs the {BOS} special token (has: {', '.join(special_tokens)})")
        check_vocabulary(mergeable_ranks, pattern, special_tokens)
        self.mergeable_ranks = dict(mergeable_ranks)
        self.pattern = pattern
        self.special_tokens = dict(special_tokens)
        self.enc = tiktoken.Encoding(
            name="nanogpt", pat_str=pattern, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )
        self.bos_id = self.special_tokens[BOS]
        self.vocab_size = self.enc.n_vocab
        self._ranks_text = "".join(
            f"{base64.b64encode(token).decode('ascii')} {rank}\n"
            for token, rank in sorted(self.mergeable_ranks.items(), key=lambda item: item[1])
        )
        header = json.dumps({"pattern": pattern, "special_tokens": self.special_tokens}, sort_keys=True)
        self.fingerprint = hashlib.sha256((self._ranks_text + header).encode("utf-8")).hexdigest()[:16]

    # --- building ---------------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
        """Learn BPE merges on `texts` until the vocabulary (special tokens included) has `vocab_size` tokens.

        The vocabulary ends up smaller when the text has no more pairs to merge (a tiny text); check `.vocab_size`.
        """
        import rustbpe

        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
            raise ConfigError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + "
                              f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
        specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
        return cls(ranks, trainer.get_pattern(), specials)

    @classmethod
    def from_encoding(cls, enc: tiktoken.Encoding) -> Tokenizer:
        """Wrap an existing tiktoken encoding (e.g. nanochat's `tokenizer.pkl`, once unpickled by the user)."""
        return cls(enc._mergeable_ranks, enc._pat_str, enc._special_tokens)

    # --- saving -----------------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the three tokenizer files into `directory` (created if needed), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
        }
        write_text_atomic(directory / RANKS_FILE, self._ranks_text)
        write_text_atomic(directory / TOKEN_BYTES_FILE, json.dumps(self.token_bytes().tolist()) + "\n")
        write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a tokenizer saved by `save`; a CheckpointError naming the file if one is missing, damaged or does
        not match the others.

        Whatever a damaged file makes a library raise stays one line: tiktoken, for one, panics in Rust on ranks it
        cannot use, and its PanicException derives from BaseException, past every `except Exception`. The ranks
        are checked before tiktoken sees them (`check_vocabulary`), and anything still raised is caught here.
        """
        directory = Path(directory)
        missing = [name for name in TOKENIZER_FILES if not (directory / name).is_file()]
        if missing:
            raise CheckpointError(f"no tokenizer in {directory} (missing {', '.join(missing)}); train one with "
                                  "`nanogpt tokenizer train --out DIR`")
        reading = directory / CONFIG_FILE
        try:
            config = json.loads(reading.read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ValueError(f"a JSON object expected, found a {type(config).__name__}")
            if config.get("format") != FORMAT:
                raise ValueError(f"format is {config.get('format')!r}, not {FORMAT!r}")
            if config.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {config.get('version')} is not supported (this nanogpt reads "
                                 f"version {FORMAT_VERSION})")
            reading = directory / RANKS_FILE
            ranks = _read_ranks(reading)
            check_ranks(ranks)
            reading = directory / TOKEN_BYTES_FILE
            stored_bytes = json.loads(reading.read_text(encoding="utf-8"))
            reading = directory / CONFIG_FILE
            tokenizer = cls(ranks, config["pattern"], config["special_tokens"])
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # ValueError, KeyError, UnicodeDecodeError, OverflowError, PanicException...
            raise CheckpointError(f"{reading} is damaged: {_describe(exc)}; {DAMAGED_FIX}") from None
        if tokenizer.fingerprint != config.get("fingerprint") or stored_bytes != tokenizer.token_bytes().tolist():
            raise CheckpointError(f"corrupt tokenizer in {directory}: its files do not match each other "
                                  f"(fingerprint or token byte lengths differ); {DAMAGED_FIX}")
        return tokenizer

    # --- using ------------------------------------------------------------------------------------------------------

    def encode(self, text: str, prepend_bos: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in the text are ordinary text, never special ids."""
        ids = self.enc.encode_ordinary(text)
        return [self.bos_id, *ids] if prepend_bos else ids

    def encode_batch(self, texts: list[str], prepend_bos: bool = False, num_threads: int = 8) -> list[list[int]]:
        """`encode` for many texts at once, on tiktoken's thread pool."""
        batch = self.enc.encode_ordinary_batch(list(texts), num_threads=num_threads)
        return [[self.bos_id, *ids] for ids in batch] if prepend_bos else batch

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; byte sequences that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        return self.enc.decode(list(ids))

    def token_bytes(self) -> torch.Tensor:
        """int32 (vocab_size,): how many UTF-8 bytes each token stands for; 0 for special tokens and unused ids.

        This is what nanochat's `token_bytes.pt` holds and what bits per byte divides by. (nanochat measures a token
        by re-encoding its decoded string, which counts a partial UTF-8 byte as the 3 bytes of U+FFFD; we count
        the token's real bytes, so that the bytes of a text's tokens add up to the text's byte length.)
        """
        lengths = [0] * self.vocab_size
        for token, rank in self.mergeable_ranks.items():
            lengths[rank] = len(token)
        return torch.tensor(lengths, dtype=torch.int32)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={self.fingerprint!r})"
