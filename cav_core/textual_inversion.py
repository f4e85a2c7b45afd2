"""Textual-inversion tokens: placeholder words whose embedding rows are learned.

The base text encoder and tokenizer are shared by every handle, so nothing here resizes
them. A prompt is tokenized by a private copy of the tokenizer that knows the new
words; their ids lie past the base vocabulary, are looked up as a harmless base id,
and a forward hook on the token-embedding layer swaps in the learned rows. Gradients
reach those rows (and only those) when they are trainable tensors.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import AdapterError, InputError


@dataclass(frozen=True, eq=False)
class TokenEmbeddings:
    """Textual-inversion tokens: ``tokens[i]`` is embedded as ``embeddings[i]``."""

    tokens: tuple[str, ...]
    embeddings: torch.Tensor  # (len(tokens), hidden)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.tokens):
            raise AdapterError(f"textual inversion: {len(self.tokens)} tokens but embeddings of shape "
                               f"{tuple(self.embeddings.shape)}")


_TOKENIZER_CACHE: dict[tuple[int, tuple[str, ...]], object] = {}
_STOPWORDS = {"a", "an", "the", "on", "in", "of", "with", "and", "at", "to", "is", "moving"}


def placeholder_names(n: int, prefix: str = "cav") -> tuple[str, ...]:
    """``n`` token strings no real caption contains, e.g. ``<cav-0>``."""
    if not 1 <= n <= 16:
        raise InputError(f"number of textual-inversion tokens must be in 1..16, got {n}")
    return tuple(f"<{prefix}-{i}>" for i in range(n))


def with_placeholders(caption: str, tokens: Sequence[str], init_word: str | None) -> str:
    """The caption the tokens are trained and used with.

    The tokens take the place of ``init_word`` (its first whole-word occurrence), as in
    textual inversion; without one (or when the caption lacks it) they lead the caption,
    so they absorb whatever appearance the words leave out."""
    joined = " ".join(tokens)
    if init_word:
        pattern = re.compile(rf"\b{re.escape(init_word)}\b", re.IGNORECASE)
        if pattern.search(caption):
            return pattern.sub(joined, caption, count=1)
    return f"{joined} {caption}".strip()


def default_init_word(caption: str) -> str | None:
    """The caption's first content word (``"a red circle on ..."`` -> ``"red"``)."""
    for w in re.findall(r"[A-Za-z]+", caption):
        if w.lower() not in _STOPWORDS:
            return w
    return None


def _extended_tokenizer(tokenizer, tokens: tuple[str, ...]):
    key = (id(tokenizer), tokens)
    tok = _TOKENIZER_CACHE.get(key)
    if tok is None:
        tok = copy.deepcopy(tokenizer)
        clash = [t for t in tokens if t in tok.get_vocab()]
        if clash:
            raise InputError(f"textual-inversion token(s) {clash} are already words of the base vocabulary; "
                             "rename them")
        tok.add_tokens(list(tokens))
        if len(_TOKENIZER_CACHE) > 16:
            _TOKENIZER_CACHE.clear()
        _TOKENIZER_CACHE[key] = tok
    return tok


def tokenize(tokenizer, prompts: Sequence[str], tokens: Sequence[str] = ()) -> torch.Tensor:
    """Token ids (B, max_length); an over-long prompt is an error, never silently cut."""
    tok = _extended_tokenizer(tokenizer, tuple(tokens)) if tokens else tokenizer
    limit = tokenizer.model_max_length
    ids = tok(list(prompts), padding="max_length", max_length=limit, truncation=False).input_ids
    for p, row in zip(prompts, ids):
        if len(row) > limit:
            raise InputError(f"prompt is too long: {len(row) - 2} tokens, the text encoder takes at most "
                             f"{limit - 2}; shorten it: {p[:80]!r}")
    return torch.tensor(ids, dtype=torch.long)


@contextlib.contextmanager
def _swapped_rows(embedding: nn.Embedding, ids: torch.Tensor, base_vocab: int,
                  table: torch.Tensor) -> Iterator[None]:
    new = ids >= base_vocab

    def hook(module, inputs, output):
        if not new.any():
            return output
        rows = table.to(device=output.device, dtype=output.dtype)[ids[new] - base_vocab]
        out = output.clone()
        out[new.to(output.device)] = rows
        return out

    h = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def encode_text(text_encoder: nn.Module, tokenizer, prompts: Sequence[str],
                tokens: Sequence[TokenEmbeddings] = (), trainable: TokenEmbeddings | None = None) -> torch.Tensor:
    """Text embeddings (B, L, D) with any textual-inversion tokens in the prompts.

    ``trainable`` tokens keep their graph (training); the rest is computed as given."""
    groups = list(tokens) + ([trainable] if trainable is not None else [])
    names = tuple(t for g in groups for t in g.tokens)
    ids = tokenize(tokenizer, prompts, names)
    device = next(text_encoder.parameters()).device
    if not names:
        return text_encoder(ids.to(device))[0]
    embedding = text_encoder.get_input_embeddings()
    # New words are numbered from the base tokenizer's length on (a small model may have
    # spare embedding rows past it; they are never used).
    base_vocab = len(tokenizer)
    table = torch.cat([g.embeddings.to(device) for g in groups], dim=0)
    if table.shape[1] != embedding.embedding_dim:
        raise InputError(f"textual-inversion embeddings have width {table.shape[1]} but this text encoder's "
                         f"is {embedding.embedding_dim}: they were trained for another model")
    lookup = torch.where(ids >= base_vocab, torch.zeros_like(ids), ids)
    # The extended tokenizer numbers new words base_vocab, base_vocab+1, ... in the order
    # they were added, which is the row order of ``table``.
    with _swapped_rows(embedding, ids.to(device), base_vocab, table):
        return text_encoder(lookup.to(device))[0]


def init_embeddings(text_encoder: nn.Module, tokenizer, init_word: str | None, n: int) -> torch.Tensor:
    """Starting rows for ``n`` new tokens: the embedding of ``init_word`` (mean of its pieces)."""
    embedding = text_encoder.get_input_embeddings().weight.detach()
    if init_word:
        ids = tokenizer(init_word, add_special_tokens=False).input_ids
        if not ids:
            raise InputError(f"init word {init_word!r} has no tokens in this tokenizer")
        row = embedding[ids].float().mean(0)
    else:
        row = embedding.float().mean(0)
    return row.expand(n, -1).clone().cpu()
